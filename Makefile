# graft: build, test and install.
#
#   make            build everything into build/ (installs missing Debian packages first)
#   make test       the busted specs (which also run the C host program and the CLI)
#   make demo       the main job
#   make asan       build and run the specs under AddressSanitizer + UBSan
#   make bench      the benchmarks against PyTorch (see scripts/bench/)
#   make install PREFIX=/usr/local

PREFIX ?= /usr/local
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
CFLAGS_ALL = -std=gnu11 $(OPT) -g -fPIC -fopenmp $(WARN) -Icore -Ilua $(LUA_CFLAGS) $(EXTRA_CFLAGS)
LDLIBS_CORE = $(BLAS_LIBS) -fopenmp -lm -lpthread -lz -lpng -ljpeg
READLINE_LIBS = -lreadline

CORE_SRC := $(sort $(wildcard core/*/*.c))
BIND_SRC := $(sort $(wildcard lua/bind/*.c)) lua/embed.c
EXE_SRC := $(sort $(filter-out lua/embed.c,$(wildcard lua/*.c)))
LUA_LIB := $(sort $(shell find lua/graft -name '*.lua' 2>/dev/null))
HOST_SRC := $(sort $(wildcard spec/host/*.c))

CORE_OBJ := $(CORE_SRC:%.c=$(BUILD)/obj/%.o)
BIND_OBJ := $(BIND_SRC:%.c=$(BUILD)/obj/%.o) $(BUILD)/obj/gen/lua_embed.o
EXE_OBJ := $(EXE_SRC:%.c=$(BUILD)/obj/%.o)
LIB_OBJ := $(CORE_OBJ) $(BIND_OBJ)

VERSION := $(shell sed -n 's/^#define GRAFT_VERSION "\(.*\)"/\1/p' lua/graft.h 2>/dev/null)

.PHONY: all deps test demo asan bench install clean fuzz fuzz-targets
all: $(BUILD)/.deps $(BUILD)/libgraft.a $(BUILD)/libgraft.so $(BUILD)/graft.so $(BUILD)/graft \
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

$(BUILD)/obj/%.o: %.c | $(BUILD)/.deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -MMD -MP -c $< -o $@

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
PC_TEXT = prefix=$(1)\nlibdir=$${prefix}/lib\nincludedir=$${prefix}/include\n\nName: graft\nDescription: fine-tuning runtime (C core, Lua 5.4 scripting)\nVersion: $(VERSION)\nRequires.private: lua5.4\nLibs: -L$${libdir} -lgraft\nLibs.private: $(BLAS_LIBS) -fopenmp -lm -lpthread -lz -lpng -ljpeg\nCflags: -I$${includedir}\n
$(BUILD)/graft.pc: Makefile lua/graft.h
	@mkdir -p $(BUILD)
	@printf '$(call PC_TEXT,$(PREFIX))' > $@

test: all
	GRAFT_BIN=$(BUILD)/graft GRAFT_HOST_EXAMPLE=$(BUILD)/host_example lua5.4 /usr/bin/busted --cpath='$(BUILD)/?.so' spec

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

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
