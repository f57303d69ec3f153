// The only file that includes sentencepiece. Debian's libsentencepiece carries its own copy of
// protobuf-lite, whose exported symbols clash with the libprotobuf that LibTorch loads (the
// process crashes in protobuf's static initialisers when both are linked). So this shim is a
// shared library of its own, loaded at run time with dlopen(RTLD_LOCAL | RTLD_DEEPBIND): its
// protobuf stays private to it. data/tokenizer.cpp calls these extern "C" functions; both sides
// share one libstdc++, so the std types passed by pointer are the same types.
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <exception>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace {

class VectorIterator : public sentencepiece::SentenceIterator {
 public:
  explicit VectorIterator(const std::vector<std::string>& texts) : texts_(texts) {}
  bool done() const override { return i_ >= texts_.size(); }
  void Next() override { ++i_; }
  const std::string& value() const override { return texts_[i_]; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  const std::vector<std::string>& texts_;
  size_t i_ = 0;
};

}  // namespace

extern "C" {

int tk_spm_abi_version() { return 1; }

// Sentencepiece reports most problems as a Status but throws from some (darts_clone's trie on a
// model with an empty piece: "failed to insert key: zero-length key"); every entry point turns
// both into `err`, so no exception crosses the dlopen boundary.
void* tk_spm_load(const std::string* path, const std::string* serialized, std::string* err) {
  try {
    auto sp = std::make_unique<sentencepiece::SentencePieceProcessor>();
    auto st = serialized ? sp->LoadFromSerializedProto(*serialized) : sp->Load(*path);
    if (!st.ok()) {
      *err = st.ToString();
      return nullptr;
    }
    return sp.release();
  } catch (const std::exception& e) {
    *err = e.what();
    return nullptr;
  }
}

void tk_spm_free(void* sp) { delete static_cast<sentencepiece::SentencePieceProcessor*>(sp); }

int tk_spm_train(const std::vector<std::string>* texts, const std::vector<std::pair<std::string, std::string>>* args,
                 std::string* proto, std::string* err) {
  try {
    std::unordered_map<std::string, std::string> kwargs(args->begin(), args->end());
    VectorIterator it(*texts);
    auto st = sentencepiece::SentencePieceTrainer::Train(kwargs, &it, proto);
    if (!st.ok()) {
      *err = st.ToString();
      return 1;
    }
    return 0;
  } catch (const std::exception& e) {
    *err = e.what();
    return 1;
  }
}

int tk_spm_encode(void* sp, const std::string* text, std::vector<int>* ids, std::string* err) {
  try {
    auto st = static_cast<sentencepiece::SentencePieceProcessor*>(sp)->Encode(*text, ids);
    if (!st.ok()) *err = st.ToString();
    return st.ok() ? 0 : 1;
  } catch (const std::exception& e) {
    *err = e.what();
    return 1;
  }
}

int tk_spm_decode(void* sp, const std::vector<int>* ids, std::string* text, std::string* err) {
  try {
    auto st = static_cast<sentencepiece::SentencePieceProcessor*>(sp)->Decode(*ids, text);
    if (!st.ok()) *err = st.ToString();
    return st.ok() ? 0 : 1;
  } catch (const std::exception& e) {
    *err = e.what();
    return 1;
  }
}

// vocab size, unk, bos, eos, pad
void tk_spm_info(void* sp, int* out) {
  auto* p = static_cast<sentencepiece::SentencePieceProcessor*>(sp);
  out[0] = p->GetPieceSize();
  out[1] = p->unk_id();
  out[2] = p->bos_id();
  out[3] = p->eos_id();
  out[4] = p->pad_id();
}

void tk_spm_piece(void* sp, int id, std::string* out) {
  *out = static_cast<sentencepiece::SentencePieceProcessor*>(sp)->IdToPiece(id);
}

}  // extern "C"
