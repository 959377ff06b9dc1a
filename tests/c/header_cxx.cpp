// The C headers compile as C++11 (extern "C", no C-only constructs); the
// C++ wrapper dflockd.hpp needs C++17 and is tested by two_tu and raii.
#include <dflockd.h>
#include <dflockd_testserver.h>

int main() {
    dflockd_testserver_options *o = nullptr;
    if (dflockd_testserver_options_new(&o) != DFLOCKD_STATUS_OK) return 1;
    dflockd_testserver_options_free(o);
    return dflockd_version_number() == DFLOCKD_VERSION_NUMBER ? 0 : 1;
}
