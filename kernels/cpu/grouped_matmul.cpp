#include "kernels/grouped_matmul.h"
