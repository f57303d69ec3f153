// The MANIFEST.json of a prepared cache (.data/fashion-mnist, .data/spam-assassin): each file's
// size and MD5 under "files", checked whenever a run reads the file, so a truncated or flipped
// byte in a cache is an error naming the file instead of silently different training data.
#pragma once
#include <fmt/format.h>

#include <cctype>
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "data/md5.h"
#include "util/error.h"
#include "util/file.h"

namespace tunekit::data {

// What a manifest says about one file.
struct ManifestEntry {
  int64_t bytes = 0;
  std::string md5;
};

// The entry `files.<name>` of the manifest `m` read from `manifest_path`; every field checked
// ("<manifest>: files.<name>.md5: expected 32 hex digits").
inline ManifestEntry manifest_entry(const nlohmann::json& m, const std::string& manifest_path, const std::string& name) {
  auto fail = [&](const std::string& key, const std::string& what) {
    return Error(fmt::format("{}: files.{}{}: {}", manifest_path, name, key, what));
  };
  if (!m.is_object() || !m.contains("files") || !m["files"].is_object())
    throw Error(fmt::format("{}: no \"files\" object (not a tunekit manifest)", manifest_path));
  const auto& files = m["files"];
  if (!files.contains(name)) throw fail("", "missing (the file is not in the manifest)");
  const auto& f = files[name];
  if (!f.is_object()) throw fail("", "expected an object with bytes and md5");
  if (!f.contains("bytes") || !f["bytes"].is_number_integer() || f["bytes"].get<int64_t>() < 0)
    throw fail(".bytes", "expected a non-negative integer");
  if (!f.contains("md5") || !f["md5"].is_string()) throw fail(".md5", "expected 32 hex digits");
  ManifestEntry e{f["bytes"].get<int64_t>(), f["md5"].get<std::string>()};
  bool hex = e.md5.size() == 32;
  for (char c : e.md5) hex = hex && std::isxdigit(static_cast<unsigned char>(c)) && !std::isupper(static_cast<unsigned char>(c));
  if (!hex) throw fail(".md5", "expected 32 lower-case hex digits");
  return e;
}

// Reads `path` (a regular file) after checking its size against `e`, then its MD5; returns its
// bytes. `redo` says how to rebuild the cache, e.g. "run `tunekit prepare fashion_mnist`".
inline std::string read_verified(const std::string& path, const ManifestEntry& e, const std::string& manifest_path,
                                 const std::string& redo) {
  const std::string manifest = std::filesystem::path(manifest_path).filename().string();
  const int64_t size = regular_file_size(path);
  if (size != e.bytes)
    throw Error(fmt::format("{}: {} bytes, {} says {} (the prepared cache is damaged; {})", path, size, manifest, e.bytes,
                            redo));
  std::string bytes = read_file(path, e.bytes);
  if (static_cast<int64_t>(bytes.size()) != e.bytes)
    throw Error(fmt::format("{}: read {} of its {} bytes (changed while read?)", path, bytes.size(), e.bytes));
  if (md5_hex(bytes) != e.md5)
    throw Error(fmt::format("{}: checksum mismatch with {} (the prepared cache is damaged; {})", path, manifest, redo));
  return bytes;
}

// The manifest at `manifest_path` as JSON (a regular file of at most 1 MiB, an object).
inline nlohmann::json read_manifest(const std::string& manifest_path) {
  std::string text = read_file(manifest_path, int64_t(1) << 20);
  auto m = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (m.is_discarded() || !m.is_object()) throw Error(fmt::format("{}: not valid JSON (damaged manifest)", manifest_path));
  return m;
}

}  // namespace tunekit::data
