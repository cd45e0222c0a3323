#include "train/data.h"
