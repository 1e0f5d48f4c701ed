# graft: build, test and install.
#
#   make            build everything into build/ (installs missing Debian packages first)
#   make test       the busted specs (which also run the C host program and the CLI)
#   make demo       the main job
#   make asan       build and run the specs under AddressSanitizer + UBSan
#   make bench      the benchmarks against PyTorch (see scripts/bench/)
#   make install PREFIX=/usr/local
#   make gpu-check  on a machine with an NVIDIA GPU: CUDA specs + GPU benchmark
#
# CUDA: `make` builds the CUDA backend in when it finds nvcc (CUDA_HOME=/usr/local/cuda);
# CUDA=0 leaves it out, CUDA=1 insists, CUDA=emu builds it over the host emulator
# (core/cuda/emu: kernels run on the CPU). With CUDA on, `make test` also builds the
# emulated module (build/emu/graft.so) and runs spec/cuda against it.

PREFIX ?= /usr/local
# Compile on every core unless the caller chose a -j (nvcc takes minutes for the kernels).
ifeq (,$(findstring -j,$(MAKEFLAGS)))
  MAKEFLAGS += -j$(shell nproc)
endif
BUILD ?= build
CC ?= gcc

# Debian packages the build and the tests need; `deps` installs the missing ones.
DEB_PACKAGES = lua5.4 liblua5.4-dev lua-busted libopenblas-dev libopenblas0-openmp \
               libreadline-dev zlib1g-dev pkg-config dataset-fashion-mnist gnuplot-nox tmux \
               libpng-dev libjpeg62-turbo-dev
OPENBLAS_DIR = /usr/lib/x86_64-linux-gnu/openblas-openmp

LUA_CFLAGS = -I/usr/include/lua5.4
LUA_LIBS = -llua5.4
BLAS_LIBS = -L$(OPENBLAS_DIR) -l:libopenblas.so.0 -Wl,-rpath,$(OPENBLAS_DIR)

OPT ?= -O2 -march=native
WARN = -Wall -Wextra -Wshadow -Wmissing-prototypes -Wstrict-prototypes -Wno-unused-parameter
CFLAGS_ALL = -std=gnu11 $(OPT) -g -fPIC -fopenmp $(WARN) -Icore -Ilua $(LUA_CFLAGS) $(CUDA_DEFS) $(EXTRA_CFLAGS)
LDLIBS_CORE = $(BLAS_LIBS) -fopenmp -lm -lpthread -lz -lpng -ljpeg $(CUDA_LIBS)
READLINE_LIBS = -lreadline

CUDA_HOME ?= /usr/local/cuda
NVCC ?= $(CUDA_HOME)/bin/nvcc
CUDA ?= auto
ifeq ($(CUDA),auto)
  override CUDA := $(if $(wildcard $(NVCC)),1,0)
endif
ifeq ($(CUDA),1)
  ifeq ($(wildcard $(NVCC)),)
    $(error CUDA=1 but nvcc is not at $(NVCC): install the CUDA toolkit or set CUDA_HOME)
  endif
endif
# SASS for Hopper (sm_90) plus its PTX, which newer GPUs compile at load; one front-end
# pass (a second virtual architecture would double nvcc's time). Older GPUs: e.g.
# CUDA_ARCH='-gencode arch=compute_80,code=[sm_80,compute_80]'.
CUDA_ARCH ?= -gencode arch=compute_90,code=[sm_90,compute_90]
CUDA_CFLAGS = -I$(CUDA_HOME)/include
CUDA_CU_SRC := $(sort $(wildcard core/cuda/*.cu))
CUDA_C_SRC := $(sort $(wildcard core/cuda/*.c))
CUDA_EMU_SRC := $(sort $(wildcard core/cuda/emu/*.cpp))
NVCC_FLAGS = -std=c++17 -O3 $(CUDA_ARCH) -Xcompiler -fPIC -Icore $(CUDA_CFLAGS) -DGRAFT_WITH_CUDA \
             -Xcudafe --diag_suppress=177
EMU_CXXFLAGS = -std=gnu++17 -O2 -g -fPIC -Wall -Wno-unused-parameter -Wno-unused-function -Icore \
               $(CUDA_CFLAGS) -DGRAFT_WITH_CUDA -DGRAFT_CUDA_EMU
CUDA_REAL_OBJ := $(CUDA_CU_SRC:%.cu=$(BUILD)/obj/%.o) $(CUDA_C_SRC:%.c=$(BUILD)/obj/%.o)
CUDA_EMU_OBJ := $(CUDA_CU_SRC:%.cu=$(BUILD)/emu/obj/%.o) $(CUDA_C_SRC:%.c=$(BUILD)/emu/obj/%.o) \
                $(CUDA_EMU_SRC:%.cpp=$(BUILD)/emu/obj/%.o)
CUDA_REAL_LIBS = -L$(CUDA_HOME)/lib64 -l:libcudart_static.a -ldl -lrt -lstdc++
CUDA_EMU_LIBS = -lstdc++
ifeq ($(CUDA),0)
  CUDA_OBJ :=
  CUDA_LIBS :=
  CUDA_DEFS :=
else ifeq ($(CUDA),emu)
  CUDA_OBJ := $(CUDA_EMU_OBJ)
  CUDA_LIBS := $(CUDA_EMU_LIBS)
  CUDA_DEFS := -DGRAFT_WITH_CUDA
else
  CUDA_OBJ := $(CUDA_REAL_OBJ)
  CUDA_LIBS := $(CUDA_REAL_LIBS)
  CUDA_DEFS := -DGRAFT_WITH_CUDA
endif

CORE_SRC := $(sort $(filter-out core/cuda/%,$(wildcard core/*/*.c)))
BIND_SRC := $(sort $(wildcard lua/bind/*.c)) lua/embed.c
EXE_SRC := $(sort $(filter-out lua/embed.c,$(wildcard lua/*.c)))
LUA_LIB := $(sort $(shell find lua/graft -name '*.lua' 2>/dev/null))
HOST_SRC := $(sort $(wildcard spec/host/*.c))

CORE_OBJ := $(CORE_SRC:%.c=$(BUILD)/obj/%.o)
BIND_OBJ := $(BIND_SRC:%.c=$(BUILD)/obj/%.o) $(BUILD)/obj/gen/lua_embed.o
EXE_OBJ := $(EXE_SRC:%.c=$(BUILD)/obj/%.o)
LIB_OBJ := $(CORE_OBJ) $(BIND_OBJ) $(CUDA_OBJ)

VERSION := $(shell sed -n 's/^#define GRAFT_VERSION "\(.*\)"/\1/p' lua/graft.h 2>/dev/null)

.PHONY: all deps test demo asan bench install clean fuzz fuzz-targets gpu-check gpu-pack emu
all: $(BUILD)/.deps $(BUILD)/.cuda-$(CUDA) $(BUILD)/libgraft.a $(BUILD)/libgraft.so $(BUILD)/graft.so $(BUILD)/graft \
     $(BUILD)/graft.pc $(BUILD)/host_example

# Install what is missing, saying what. Runs once per build folder.
deps: $(BUILD)/.deps
$(BUILD)/.deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "deps: installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null \
	    || { echo "deps: apt-get install failed"; exit 1; }; \
	fi
	@mkdir -p $(BUILD) && touch $@

# The CUDA mode is compiled into every object (GRAFT_WITH_CUDA): switching it rebuilds.
$(BUILD)/.cuda-$(CUDA): | $(BUILD)/.deps
	@rm -f $(BUILD)/.cuda-* && touch $@

$(BUILD)/obj/%.o: %.c $(BUILD)/.cuda-$(CUDA) | $(BUILD)/.deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -MMD -MP -c $< -o $@

# CUDA: host-side C with the toolkit's headers; kernels through nvcc, or through g++
# over the emulator (its header forced in first).
$(BUILD)/obj/core/cuda/%.o: core/cuda/%.c $(BUILD)/.cuda-$(CUDA) | $(BUILD)/.deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(CUDA_CFLAGS) $(if $(filter emu,$(CUDA)),-DGRAFT_CUDA_EMU) -MMD -MP -c $< -o $@
$(BUILD)/obj/core/cuda/%.o: core/cuda/%.cu core/cuda/kernel.cuh $(BUILD)/.cuda-$(CUDA) | $(BUILD)/.deps
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCC_FLAGS) -MMD -MP -c $< -o $@
$(BUILD)/emu/obj/core/cuda/%.o: core/cuda/%.c | $(BUILD)/.deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -DGRAFT_WITH_CUDA $(CUDA_CFLAGS) -DGRAFT_CUDA_EMU -MMD -MP -c $< -o $@
$(BUILD)/emu/obj/core/cuda/%.o: core/cuda/%.cu core/cuda/emu/emu.h | $(BUILD)/.deps
	@mkdir -p $(dir $@)
	$(CXX) $(EMU_CXXFLAGS) -include core/cuda/emu/emu.h -MMD -MP -x c++ -c $< -o $@
$(BUILD)/emu/obj/core/cuda/emu/%.o: core/cuda/emu/%.cpp core/cuda/emu/emu.h | $(BUILD)/.deps
	@mkdir -p $(dir $@)
	$(CXX) $(EMU_CXXFLAGS) -MMD -MP -c $< -o $@

# The module over the emulator, for spec/cuda on machines without a GPU.
emu: $(BUILD)/emu/graft.so
$(BUILD)/emu/graft.so: $(CORE_OBJ) $(BIND_OBJ) $(CUDA_EMU_OBJ)
	$(CC) -shared -Wl,-z,nodelete -o $@ $^ $(BLAS_LIBS) -fopenmp -lm -lpthread -lz -lpng -ljpeg $(CUDA_EMU_LIBS)

# The pure-Lua library is compiled into the binaries (package.preload), so the
# executable, libgraft and the Lua module never look for it on disk.
$(BUILD)/gen/lua_embed.c: $(LUA_LIB) lua/tools/embed.lua | $(BUILD)/.deps
	@mkdir -p $(dir $@)
	lua5.4 lua/tools/embed.lua $@ $(LUA_LIB)
$(BUILD)/obj/gen/lua_embed.o: $(BUILD)/gen/lua_embed.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -c $< -o $@

$(BUILD)/libgraft.a: $(LIB_OBJ)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/libgraft.so: $(LIB_OBJ)
	$(CC) -shared -o $@ $^ $(LDLIBS_CORE) $(LUA_LIBS)

# The module for stock lua5.4: the interpreter provides the Lua symbols.
$(BUILD)/graft.so: $(LIB_OBJ)
	$(CC) -shared -Wl,-z,nodelete -o $@ $^ $(LDLIBS_CORE)

$(BUILD)/graft: $(EXE_OBJ) $(BUILD)/libgraft.a
	$(CC) -o $@ $(EXE_OBJ) $(BUILD)/libgraft.a $(LDLIBS_CORE) $(LUA_LIBS) $(READLINE_LIBS) -ldl -Wl,-E

$(BUILD)/host_example: $(HOST_SRC) $(BUILD)/libgraft.a lua/graft.h
	$(CC) $(CFLAGS_ALL) -o $@ $(HOST_SRC) $(BUILD)/libgraft.a $(LDLIBS_CORE) $(LUA_LIBS) -ldl

# pkg-config file for PREFIX (make install writes one for its own PREFIX).
PC_TEXT = prefix=$(1)\nlibdir=$${prefix}/lib\nincludedir=$${prefix}/include\n\nName: graft\nDescription: fine-tuning runtime (C core, Lua 5.4 scripting)\nVersion: $(VERSION)\nRequires.private: lua5.4\nLibs: -L$${libdir} -lgraft\nLibs.private: $(BLAS_LIBS) -fopenmp -lm -lpthread -lz -lpng -ljpeg $(CUDA_LIBS)\nCflags: -I$${includedir}\n
$(BUILD)/graft.pc: Makefile lua/graft.h
	@mkdir -p $(BUILD)
	@printf '$(call PC_TEXT,$(PREFIX))' > $@

# With CUDA built in, spec/cuda runs a second time over the emulator (its own summary
# line), with two emulated devices so ops on cuda:1 are checked too.
TEST_EMU = $(if $(filter 0,$(CUDA)),,$(BUILD)/emu/graft.so)
test: all $(TEST_EMU)
	@s=0; GRAFT_BIN=$(BUILD)/graft GRAFT_HOST_EXAMPLE=$(BUILD)/host_example lua5.4 /usr/bin/busted --cpath='$(BUILD)/?.so' spec || s=1; \
	if [ -n "$(TEST_EMU)" ]; then echo "spec/cuda over the CUDA emulator ($(TEST_EMU)):"; \
	  GRAFT_CUDA_EMU=1 GRAFT_EMU_DEVICES=2 lua5.4 /usr/bin/busted --cpath='$(BUILD)/emu/?.so' spec/cuda || s=1; fi; exit $$s

# On a machine with an NVIDIA GPU (the lent H200): see scripts/gpu/check.sh. gpu-pack
# (here) bundles the sm_90 build and its runtime for a GPU machine without the packages.
gpu-check:
	bash scripts/gpu/check.sh
gpu-pack:
	bash scripts/gpu/pack.sh

demo: all
	$(BUILD)/graft scripts/demo.lua

# Sanitizers: a separate build folder, and stock lua5.4 running busted with the
# sanitizer runtime preloaded (the interpreter itself is not instrumented).
ASAN_FLAGS = -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
asan: $(BUILD)/.deps
	$(MAKE) BUILD=build-asan OPT='-O1 -g' EXTRA_CFLAGS='$(ASAN_FLAGS)' \
	  LDLIBS_CORE='$(LDLIBS_CORE) $(ASAN_FLAGS)' build-asan/graft.so build-asan/graft build-asan/host_example
	LD_PRELOAD="$$($(CC) -print-file-name=libasan.so) $$($(CC) -print-file-name=libubsan.so)" \
	  ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 LSAN_OPTIONS=suppressions=spec/helpers/lsan.supp \
	  GRAFT_BIN=build-asan/graft GRAFT_HOST_EXAMPLE=build-asan/host_example lua5.4 /usr/bin/busted --cpath='build-asan/?.so' spec

# Fuzzing: each spec/fuzz/fuzz_NAME.c is a libFuzzer target over the core (clang 14
# and libclang-rt-14-dev from Debian), run for FUZZ_SECONDS each from the seed corpus in
# spec/fuzz/corpus/NAME (copied to build-fuzz/corpus/NAME, which collects new inputs).
FUZZ_SECONDS ?= 60
FUZZ_SRC := $(sort $(wildcard spec/fuzz/fuzz_*.c))
FUZZ_FLAGS = -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
fuzz: $(BUILD)/.deps
	@for p in clang libclang-rt-14-dev; do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "fuzz: installing Debian packages:$$missing"; \
	  apt-get install -y -qq $$missing >/dev/null || exit 1; fi
	$(MAKE) BUILD=build-fuzz CC=clang OPT='-O1 -g' EXTRA_CFLAGS='$(FUZZ_FLAGS) -fsanitize=fuzzer-no-link' fuzz-targets
	@for src in $(FUZZ_SRC); do name=$$(basename $$src .c | sed 's/^fuzz_//'); \
	  mkdir -p build-fuzz/corpus/$$name; cp -r spec/fuzz/corpus/$$name/. build-fuzz/corpus/$$name/ 2>/dev/null; \
	  echo "fuzz: $$name for $(FUZZ_SECONDS) s"; \
	  build-fuzz/fuzz_$$name -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 \
	    build-fuzz/corpus/$$name || exit 1; done

fuzz-targets: $(FUZZ_SRC:spec/fuzz/%.c=$(BUILD)/%)
$(BUILD)/fuzz_%: spec/fuzz/fuzz_%.c $(CORE_OBJ)
	$(CC) $(CFLAGS_ALL) -fsanitize=fuzzer -o $@ $< $(CORE_OBJ) $(LDLIBS_CORE)

bench: all
	bash scripts/bench/run.sh

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include \
	  $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/lib/lua/5.4 $(DESTDIR)$(PREFIX)/share/lua/5.4/graft
	install -m 755 $(BUILD)/graft $(DESTDIR)$(PREFIX)/bin/graft
	install -m 644 $(BUILD)/libgraft.a $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(BUILD)/libgraft.so $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(BUILD)/graft.so $(DESTDIR)$(PREFIX)/lib/lua/5.4/graft.so
	install -m 644 lua/graft.h $(DESTDIR)$(PREFIX)/include/graft.h
	printf '$(call PC_TEXT,$(PREFIX))' > $(DESTDIR)$(PREFIX)/lib/pkgconfig/graft.pc
	cp -r lua/graft/. $(DESTDIR)$(PREFIX)/share/lua/5.4/graft/

clean:
	rm -rf build build-asan build-fuzz

-include $(shell find $(BUILD)/obj $(BUILD)/emu/obj -name '*.d' 2>/dev/null)
