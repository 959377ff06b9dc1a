#include <dflockd.hpp>
#include <dflockd.h>

std::uint64_t fence_in_b(const char *token) {
    std::uint64_t f = 0;
    if (dflockd_fence_from_token(token, 32, &f, nullptr) != DFLOCKD_STATUS_OK) return 0;
    return f;
}
