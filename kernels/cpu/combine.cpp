#include "kernels/combine.h"
