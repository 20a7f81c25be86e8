// CBLAS from OpenBLAS (Debian libopenblas-dev installs cblas.h under the multiarch include dir).
#include <cblas.h>
