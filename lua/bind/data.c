/* graft bindings: graft.data's C half, in the table graft._data: the IDX reader, image
 * decoding and PNG writing, the CSV reader, and the two file-system helpers the
 * datasets need (listing a folder, creating one). lua/graft/data builds the API on them.
 */
#include "bind.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/csv.h"
#include "data/idx.h"
#include "data/image.h"

#define DATA_CSV_MT "graft.data.csv_box"
#define DATA_DIR_MT "graft.data.dir_box"

/* _data.idx(path) -> tensor of the file's dtype and dims. */
static int l_idx(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    graft_tensor **out = lg_shell(L);
    if (graft_idx_read(out, path)) return lg_raise(L);
    return 1;
}

static int data_channels(lua_State *L, int idx) {
    lua_Integer c = luaL_optinteger(L, idx, 0);
    if (c != 0 && c != 1 && c != 3) return luaL_error(L, "read_image: channels must be 1 or 3, got %d", (int)c);
    return (int)c;
}

/* _data.read_image(path [, channels]) -> uint8 [H, W, C]. */
static int l_read_image(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    int c = data_channels(L, 2);
    graft_tensor **out = lg_shell(L);
    if (graft_image_read(out, path, c)) return lg_raise(L);
    return 1;
}

/* _data.decode_image(bytes [, channels [, name]]) -> uint8 [H, W, C]. */
static int l_decode_image(lua_State *L) {
    size_t n;
    const char *bytes = luaL_checklstring(L, 1, &n);
    int c = data_channels(L, 2);
    const char *name = luaL_optstring(L, 3, NULL);
    graft_tensor **out = lg_shell(L);
    if (graft_image_decode(out, bytes, n, c, name)) return lg_raise(L);
    return 1;
}

/* _data.write_png(t, path): t uint8 [H, W] or [H, W, C]. */
static int l_write_png(lua_State *L) {
    graft_tensor *t = lg_check(L, 1);
    const char *path = luaL_checkstring(L, 2);
    if (graft_png_write(t, path)) return lg_raise(L);
    return 0;
}

/* The CSV table lives in a userdata until its parts are handed to Lua, so a memory error
 * while pushing the names frees it. */
static int data_csv_gc(lua_State *L) {
    graft_csv_table *t = luaL_checkudata(L, 1, DATA_CSV_MT);
    graft_csv_table_free(t);
    return 0;
}

/* _data.read_csv(path [, {delimiter = ",", header = true|false|"auto", dtype = "float32"}])
 * -> values [rows, cols], names (a list) or nil. */
static int l_read_csv(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    graft_csv_opts o = {.delimiter = ',', .header = -1, .dtype = GRAFT_F32};
    int opts = lua_istable(L, 2) ? 2 : 0;
    if (opts) {
        if (lua_getfield(L, opts, "delimiter") != LUA_TNIL) {
            size_t len;
            const char *d = lua_tolstring(L, -1, &len);
            if (!d || len != 1) return luaL_error(L, "read_csv: delimiter must be a one-character string");
            o.delimiter = d[0];
        }
        lua_pop(L, 1);
        int ht = lua_getfield(L, opts, "header");
        if (ht == LUA_TBOOLEAN) o.header = lua_toboolean(L, -1);
        else if (ht == LUA_TSTRING && strcmp(lua_tostring(L, -1), "auto") == 0) o.header = -1;
        else if (ht != LUA_TNIL) return luaL_error(L, "read_csv: header must be true, false or \"auto\"");
        lua_pop(L, 1);
        o.dtype = (graft_dtype)lg_opt_dtype(L, opts, GRAFT_F32);
    }
    graft_csv_table *box = lua_newuserdatauv(L, sizeof *box, 0);
    memset(box, 0, sizeof *box);
    luaL_setmetatable(L, DATA_CSV_MT);
    graft_tensor **out = lg_shell(L);
    if (graft_csv_read(box, path, &o)) return lg_raise(L);
    *out = box->values; /* the shell owns it from here */
    box->values = NULL;
    if (box->names) {
        lua_createtable(L, (int)box->ncols, 0);
        for (int64_t i = 0; i < box->ncols; i++) {
            lua_pushstring(L, box->names[i]);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
    } else {
        lua_pushnil(L);
    }
    graft_csv_table_free(box);
    return 2;
}

/* ---- file system ---- */

static int data_dir_gc(lua_State *L) {
    DIR **d = luaL_checkudata(L, 1, DATA_DIR_MT);
    if (*d) closedir(*d);
    *d = NULL;
    return 0;
}

/* _data.listdir(path) -> names, kinds: the entries of a folder (without . and ..), in
 * no particular order; kinds[i] is "dir", "file" or "other", following symbolic links
 * (as torchvision's os.walk(followlinks=True)). */
static int l_listdir(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    DIR **box = lua_newuserdatauv(L, sizeof(DIR *), 0);
    *box = NULL;
    luaL_setmetatable(L, DATA_DIR_MT);
    *box = opendir(path);
    if (!*box) return lg_errorf(L, "cannot open folder \"%s\": %s", path, strerror(errno));
    lua_newtable(L);
    lua_newtable(L);
    int names = lua_gettop(L) - 1, kinds = names + 1;
    lua_Integer n = 0;
    int fd = dirfd(*box);
    struct dirent *e;
    while ((errno = 0, e = readdir(*box)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        struct stat sb;
        const char *kind = "other";
        if (fstatat(fd, e->d_name, &sb, 0) == 0) kind = S_ISDIR(sb.st_mode) ? "dir" : S_ISREG(sb.st_mode) ? "file" : "other";
        lua_pushstring(L, e->d_name);
        lua_rawseti(L, names, ++n);
        lua_pushstring(L, kind);
        lua_rawseti(L, kinds, n);
    }
    int err = errno;
    closedir(*box);
    *box = NULL;
    if (err) return lg_errorf(L, "cannot read folder \"%s\": %s", path, strerror(err));
    return 2;
}

/* _data.makedirs(path): mkdir -p; true when it exists as a folder afterwards. */
static int l_makedirs(lua_State *L) {
    size_t len;
    const char *path = luaL_checklstring(L, 1, &len);
    if (len == 0) return luaL_error(L, "makedirs: empty path");
    luaL_Buffer b;
    char *p = luaL_buffinitsize(L, &b, len + 1);
    memcpy(p, path, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (p[i] != '/' && p[i] != '\0') continue;
        char save = p[i];
        p[i] = '\0';
        if (mkdir(p, 0777) != 0 && errno != EEXIST) {
            int e = errno;
            return lg_errorf(L, "makedirs: cannot create \"%s\": %s", p, strerror(e));
        }
        p[i] = save;
    }
    struct stat sb;
    if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return lg_errorf(L, "makedirs: \"%s\" exists and is not a folder", path);
    return 0;
}

static const luaL_Reg data_funcs[] = {
    {"idx", l_idx},           {"read_image", l_read_image}, {"decode_image", l_decode_image},
    {"write_png", l_write_png}, {"read_csv", l_read_csv},   {"listdir", l_listdir},
    {"makedirs", l_makedirs}, {NULL, NULL}};

/* graft._data: the module table is on top of the stack. */
void graft_bind_data(lua_State *L) {
    int module = lua_gettop(L);
    luaL_newmetatable(L, DATA_CSV_MT);
    lua_pushcfunction(L, data_csv_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    luaL_newmetatable(L, DATA_DIR_MT);
    lua_pushcfunction(L, data_dir_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    luaL_newlib(L, data_funcs);
    lua_setfield(L, module, "_data");
}
