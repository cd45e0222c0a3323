#include "kernels/rmsnorm.h"
