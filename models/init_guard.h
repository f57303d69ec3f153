// Skipping the random initialisation of weights a checkpoint is about to overwrite. While a
// SkipInit(true) is alive on this thread, models::Linear and the Hugging Face families allocate
// their weights without filling them; SkipInit(false) turns initialisation back on inside such a
// scope (for parts no checkpoint holds, e.g. an attention gate). src/hf/load.cpp builds a model
// under one and then initialises every tensor the checkpoint did not fill: a 0.5B model's random
// initialisation took longer than reading its weights.
#pragma once

namespace tunekit::models {

class SkipInit {
 public:
  explicit SkipInit(bool skip = true);
  ~SkipInit();
  SkipInit(const SkipInit&) = delete;
  SkipInit& operator=(const SkipInit&) = delete;

 private:
  bool previous_;
};

// True inside a SkipInit(true) scope (and not inside a nested SkipInit(false)).
bool init_skipped();

}  // namespace tunekit::models
