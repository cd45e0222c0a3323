#include "dist/communicator.h"
