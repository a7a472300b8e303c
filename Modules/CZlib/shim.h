// Debian's zlib1g-dev installs zlib.h in /usr/include. The dataset readers use zlib
// to inflate gzip-compressed IDX files (how MNIST and Fashion-MNIST are shipped).
#include <zlib.h>
