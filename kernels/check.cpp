#include "kernels/check.h"

namespace remoe {

void fail(const std::string& message) { throw Error(message); }

void fail_call(const char* library, const char* statement, const char* detail, const char* file,
               int line) {
  throw Error(str_cat(library, " error: ", detail, "\n  in ", statement, "\n  at ", file, ":", line));
}

}  // namespace remoe
