// One table per enum a recipe can choose: each row is {name, value, one-line description}, and
// parsing, to_string, `tunekit ls` and error messages all read the same rows. An enum's header
// defines its rows and a `enum_rows(E)` found by argument-dependent lookup; rows may carry more
// (an adapter kind's PEFT name).
#pragma once
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tunekit {

template <typename E>
struct EnumRow {
  const char* name;  // as written in a recipe
  E value;
  const char* help;  // one line, for `tunekit ls`
};

// The rows of E's table (an array of rows with .name, .value and .help), in listing order.
template <typename E>
constexpr const auto& rows_of() {
  return enum_rows(E{});
}

// The row of v; every value has one.
template <typename E>
const auto& enum_row(E v) {
  for (const auto& row : rows_of<E>())
    if (row.value == v) return row;
  return rows_of<E>()[0];  // unreachable for a complete table
}

template <typename E>
std::string enum_name(E v) {
  return enum_row(v).name;
}

template <typename E>
std::optional<E> enum_from_name(std::string_view name) {
  for (const auto& row : rows_of<E>())
    if (name == row.name) return row.value;
  return std::nullopt;
}

// The names in table order (what a bad choice lists).
template <typename E>
std::vector<std::string> enum_names() {
  std::vector<std::string> out;
  for (const auto& row : rows_of<E>()) out.emplace_back(row.name);
  return out;
}

}  // namespace tunekit
