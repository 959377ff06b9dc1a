/* The headers compile as strict C99 (their stated minimum) with every
 * warning an error, and every public name is usable from C99 code. */
#include <dflockd.h>
#include <dflockd_testserver.h>

int main(void) {
    dflockd_metrics m = {0};
    char token[DFLOCKD_TOKEN_SIZE];
    (void)m;
    (void)token;
    return dflockd_version_number() == DFLOCKD_VERSION_NUMBER && DFLOCKD_MAX_LINE_BYTES == 256 ? 0 : 1;
}
