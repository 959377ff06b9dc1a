// The header and the C++ wrapper included in two translation units of one
// program: no duplicate definitions, usable from C++ as is.
#include <dflockd.h>
#include <dflockd.hpp>

#include <cstring>
#include <iostream>

std::uint64_t fence_in_b(const char *token);

int main() {
    const char *t = "18eb813dca7f8502533e7c4ee43322ea";
    std::uint64_t a = dflockd::fence_from_token(t);
    if (a != fence_in_b(t) || std::strcmp(dflockd_version(), "") == 0) return 1;
    std::cout << "two translation units: ok (fence " << a << ")\n";
    return 0;
}
