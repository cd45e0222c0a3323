#include "kernels/cross_entropy.h"
