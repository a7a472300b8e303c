// libFuzzer's entry point for programs that keep their own main (compiler-rt's
// FuzzerInterface.h); blasnet-fuzz calls it only when built by scripts/fuzz, which
// links libFuzzer in with -sanitize=fuzzer. Plain builds never reference it.
#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));
