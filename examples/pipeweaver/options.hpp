#pragma once
// Strict parsing of the tool's numeric options. CLI11's own conversions accept "1e18" for an
// integer and wrap "-1" into 2^64 - 1 for an unsigned one; here an integer option takes
// decimal digits only (a leading '-' only where negatives are allowed), a number option a
// finite decimal number, and each has a documented range. Anything else is refused while the
// command line is parsed: one line naming the option, exit status 2.
#include <charconv>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <system_error>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

namespace pwcli {

namespace detail {

/// The value type of an option's target: T itself, or T of a std::optional<T>.
template <class T>
struct value_of {
  using type = T;
};
template <class T>
struct value_of<std::optional<T>> {
  using type = T;
};

/// The whole of `text` as an integer in [lo, hi]; CLI::ValidationError naming `option` otherwise.
template <class Int>
Int strict_integer(const std::string& text, const std::string& option, Int lo, Int hi) {
  const std::string expected = " (expected an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "])";
  const auto not_integer = [&](const std::string& why) { return CLI::ValidationError(option + ": '" + text + "' " + why + expected); };
  const bool digits_only = !text.empty() && text.find_first_not_of("0123456789", text[0] == '-' ? 1 : 0) == std::string::npos &&
                           text != "-";
  if (!digits_only) throw not_integer("is not a decimal integer");
  Int v{};
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec == std::errc::result_out_of_range || (ec == std::errc{} && (v < lo || v > hi)) || (text[0] == '-' && lo >= 0))
    throw CLI::ValidationError(option + " is " + text + ", out of range" + expected);
  if (ec != std::errc{} || end != text.data() + text.size()) throw not_integer("is not a decimal integer");
  return v;
}

/// The whole of `text` as a finite number in [lo, hi] ((lo, hi] with lo_open).
inline double strict_number(const std::string& text, const std::string& option, double lo, double hi, bool lo_open) {
  const std::string expected = std::string(" (expected a number in ") + (lo_open ? "(" : "[") + fmt::format("{}", lo) + ", " + fmt::format("{}", hi) + "])";
  double v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc{} || end != text.data() + text.size() || !std::isfinite(v))
    throw CLI::ValidationError(option + ": '" + text + "' is not a finite number" + expected);
  if (v < lo || v > hi || (lo_open && v == lo)) throw CLI::ValidationError(option + " is " + text + ", out of range" + expected);
  return v;
}

}  // namespace detail

/// An integer option (into an integer or a std::optional of one), decimal digits in [lo, hi].
template <class T>
CLI::Option* add_integer_option(CLI::App& cmd, const std::string& name, T& target, std::int64_t lo, std::int64_t hi, const std::string& help) {
  return cmd
      .add_option_function<std::string>(
          name,
          [&target, name, lo, hi](const std::string& s) {
            using Int = typename detail::value_of<T>::type;
            target = static_cast<Int>(detail::strict_integer<std::int64_t>(s, name, lo, hi));
          },
          help + " (an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "])")
      ->type_name("INT");
}

/// A seed: decimal digits in [0, 2^64 - 1].
inline CLI::Option* add_seed_option(CLI::App& cmd, const std::string& name, std::uint64_t& target, const std::string& help) {
  return cmd
      .add_option_function<std::string>(
          name,
          [&target, name](const std::string& s) {
            target = detail::strict_integer<std::uint64_t>(s, name, 0, std::numeric_limits<std::uint64_t>::max());
          },
          help + " (an integer in [0, 2^64 - 1])")
      ->type_name("UINT");
}

/// A finite number option (into a double or a std::optional<double>) in [lo, hi] ((lo, hi] with lo_open).
template <class T>
CLI::Option* add_number_option(CLI::App& cmd, const std::string& name, T& target, double lo, double hi, bool lo_open, const std::string& help) {
  return cmd
      .add_option_function<std::string>(
          name, [&target, name, lo, hi, lo_open](const std::string& s) { target = detail::strict_number(s, name, lo, hi, lo_open); },
          help + " (a number in " + (lo_open ? "(" : "[") + fmt::format("{}", lo) + ", " + fmt::format("{}", hi) + "])")
      ->type_name("NUMBER");
}

}  // namespace pwcli
