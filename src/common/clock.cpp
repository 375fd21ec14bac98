#include "common/clock.h"

namespace trousseau {

Clock& SystemClock() {
  static RealClock clock;
  return clock;
}

}  // namespace trousseau
