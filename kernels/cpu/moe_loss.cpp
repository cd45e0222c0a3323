#include "kernels/moe_loss.h"
