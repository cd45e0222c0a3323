#include "kernels/swiglu.h"
