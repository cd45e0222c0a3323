#include "kernels/permute.h"
