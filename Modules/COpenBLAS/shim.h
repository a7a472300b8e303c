// Debian's libopenblas-dev puts cblas.h on the pkg-config include path of the
// selected OpenBLAS variant; liblapacke-dev installs lapacke.h in /usr/include.
#include <cblas.h>
#include <lapacke.h>
