#include "kernels/router.h"
