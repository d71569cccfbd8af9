// A consumer that uses the umbrella header: it must compile and run against an installed or
// vendored pipeweaver with nothing but the package's own usage requirements.
#include <pipeweaver/pipeweaver.hpp>

#include <cstdio>

int main() {
  namespace pw = pipeweaver;
  pw::Nanoseconds t = pw::from_ms(1.5);
  pw::StageSpec s{pw::ModuleId{0}, 0, pw::RankId{0}, pw::Pass::forward, 0, 4};
  static_assert(pw::Stage<pw::StageSpec>);
  std::printf("pipeweaver consumer: %lld ns, %d layers\n", static_cast<long long>(t.count()), s.layer_count());
  return t.count() == 1'500'000 && s.layer_count() == 4 ? 0 : 1;
}
