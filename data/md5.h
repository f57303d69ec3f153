// MD5 (RFC 1321), used to check the SpamAssassin mails against the checksums their package ships.
#pragma once
#include <string>

namespace tunekit::data {

// Lower-case hex digest of `bytes`.
std::string md5_hex(const std::string& bytes);

}  // namespace tunekit::data
