#include "autodiff/op_util.h"
#include "autodiff/ops.h"
#include "kernels/router.h"
