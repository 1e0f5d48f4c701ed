/* graft core: the dtype table, PyTorch's promotion rule, exact half/bfloat16
 * conversions, devices and the thread-local error message. */
#include "tensor.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local char error_buf[1024];

graft_status graft_error(graft_status s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error_buf, sizeof error_buf, fmt, ap);
    va_end(ap);
    return s;
}

const char *graft_last_error(void) { return error_buf; }

static const struct { const char *name; size_t size; } dtype_info[GRAFT_NDTYPES] = {
    [GRAFT_F32] = {"float32", 4},  [GRAFT_F64] = {"float64", 8}, [GRAFT_F16] = {"float16", 2},
    [GRAFT_BF16] = {"bfloat16", 2}, [GRAFT_I64] = {"int64", 8},  [GRAFT_I32] = {"int32", 4},
    [GRAFT_I16] = {"int16", 2},    [GRAFT_I8] = {"int8", 1},     [GRAFT_U8] = {"uint8", 1},
    [GRAFT_BOOL] = {"bool", 1},
};

size_t graft_dtype_size(graft_dtype d) { return dtype_info[d].size; }
const char *graft_dtype_name(graft_dtype d) {
    return (unsigned)d < GRAFT_NDTYPES ? dtype_info[d].name : "?";
}

int graft_dtype_from_name(const char *name) {
    static const struct { const char *alias; graft_dtype d; } aliases[] = {
        {"float", GRAFT_F32}, {"double", GRAFT_F64}, {"half", GRAFT_F16},
        {"long", GRAFT_I64},  {"int", GRAFT_I32},    {"short", GRAFT_I16},
        {"char", GRAFT_I8},   {"byte", GRAFT_U8},
    };
    for (int d = 0; d < GRAFT_NDTYPES; d++)
        if (strcmp(name, dtype_info[d].name) == 0) return d;
    for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
        if (strcmp(name, aliases[i].alias) == 0) return aliases[i].d;
    return -1;
}

bool graft_dtype_is_float(graft_dtype d) {
    return d == GRAFT_F32 || d == GRAFT_F64 || d == GRAFT_F16 || d == GRAFT_BF16;
}
bool graft_dtype_is_int(graft_dtype d) {
    return d == GRAFT_I64 || d == GRAFT_I32 || d == GRAFT_I16 || d == GRAFT_I8 || d == GRAFT_U8;
}

/* PyTorch's promotion table for two tensors of the same category priority. */
graft_dtype graft_dtype_promote(graft_dtype a, graft_dtype b) {
    if (a == b) return a;
    if (a == GRAFT_BOOL) return b;
    if (b == GRAFT_BOOL) return a;
    bool fa = graft_dtype_is_float(a), fb = graft_dtype_is_float(b);
    if (fa && !fb) return a;
    if (fb && !fa) return b;
    if (fa && fb) {
        if (a == GRAFT_F64 || b == GRAFT_F64) return GRAFT_F64;
        if (a == GRAFT_F32 || b == GRAFT_F32) return GRAFT_F32;
        return GRAFT_F32; /* f16 with bf16 */
    }
    /* both integer */
    if (a == GRAFT_U8 || b == GRAFT_U8) {
        graft_dtype o = a == GRAFT_U8 ? b : a;
        return o == GRAFT_I8 ? GRAFT_I16 : o;
    }
    return graft_dtype_size(a) >= graft_dtype_size(b) ? a : b;
}

/* ---- float16 / bfloat16, round to nearest even ---- */
uint16_t graft_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u) /* inf or nan */
        return (uint16_t)(sign | 0x7c00u | (absx > 0x7f800000u ? 0x200u | ((absx >> 13) & 0x3ffu) : 0));
    if (absx >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* rounds to inf */
    if (absx < 0x38800000u) {                                   /* subnormal or zero in half */
        /* half subnormal = round(|f| / 2^-24) */
        float a;
        memcpy(&a, &absx, 4);
        float scaled = a * 16777216.0f; /* exact: power of two */
        uint32_t r = (uint32_t)nearbyintf(scaled);
        return (uint16_t)(sign | r);
    }
    uint32_t mant = absx & 0x7fffffu;
    uint32_t exp = (absx >> 23) - 127 + 15;
    uint32_t h = (exp << 10) | (mant >> 13);
    uint32_t rest = mant & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) h++;
    return (uint16_t)(sign | h);
}

float graft_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu, x;
    if (exp == 0) {
        float v = (float)mant / 16777216.0f;
        return sign ? -v : v;
    } else if (exp == 31) {
        x = sign | 0x7f800000u | (mant << 13);
    } else {
        x = sign | ((exp - 15 + 127) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &x, 4);
    return f;
}

uint16_t graft_f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u); /* quiet nan */
    uint32_t lsb = (x >> 16) & 1u;
    x += 0x7fffu + lsb;
    return (uint16_t)(x >> 16);
}

float graft_bf16_to_f32(uint16_t h) {
    uint32_t x = (uint32_t)h << 16;
    float f;
    memcpy(&f, &x, 4);
    return f;
}

/* ---- slow single-element access ---- */
double graft_load_f64(const void *p, graft_dtype d) {
    switch (d) {
    case GRAFT_F32: return *(const float *)p;
    case GRAFT_F64: return *(const double *)p;
    case GRAFT_F16: return graft_f16_to_f32(*(const uint16_t *)p);
    case GRAFT_BF16: return graft_bf16_to_f32(*(const uint16_t *)p);
    case GRAFT_I64: return (double)*(const int64_t *)p;
    case GRAFT_I32: return *(const int32_t *)p;
    case GRAFT_I16: return *(const int16_t *)p;
    case GRAFT_I8: return *(const int8_t *)p;
    case GRAFT_U8: case GRAFT_BOOL: return *(const uint8_t *)p;
    default: return 0;
    }
}

static int64_t dtype_f2i(double v) {
    if (!(v == v) || v >= 9223372036854775808.0 || v < -9223372036854775808.0) return INT64_MIN;
    return (int64_t)v;
}

int64_t graft_load_i64(const void *p, graft_dtype d) {
    switch (d) {
    case GRAFT_I64: return *(const int64_t *)p;
    case GRAFT_I32: return *(const int32_t *)p;
    case GRAFT_I16: return *(const int16_t *)p;
    case GRAFT_I8: return *(const int8_t *)p;
    case GRAFT_U8: case GRAFT_BOOL: return *(const uint8_t *)p;
    default: return dtype_f2i(graft_load_f64(p, d));
    }
}

void graft_store_f64(void *p, graft_dtype d, double v) {
    switch (d) {
    case GRAFT_F32: *(float *)p = (float)v; break;
    case GRAFT_F64: *(double *)p = v; break;
    case GRAFT_F16: *(uint16_t *)p = graft_f32_to_f16((float)v); break;
    case GRAFT_BF16: *(uint16_t *)p = graft_f32_to_bf16((float)v); break;
    case GRAFT_BOOL: *(uint8_t *)p = v != 0; break;
    default: graft_store_i64(p, d, dtype_f2i(v)); break;
    }
}

void graft_store_i64(void *p, graft_dtype d, int64_t v) {
    switch (d) {
    case GRAFT_I64: *(int64_t *)p = v; break;
    case GRAFT_I32: *(int32_t *)p = (int32_t)(uint32_t)(uint64_t)v; break;
    case GRAFT_I16: *(int16_t *)p = (int16_t)(uint16_t)(uint64_t)v; break;
    case GRAFT_I8: *(int8_t *)p = (int8_t)(uint8_t)(uint64_t)v; break;
    case GRAFT_U8: *(uint8_t *)p = (uint8_t)(uint64_t)v; break;
    case GRAFT_BOOL: *(uint8_t *)p = v != 0; break;
    default: graft_store_f64(p, d, (double)v); break;
    }
}

/* ---- devices ---- */
graft_status graft_device_parse(graft_device *out, const char *s) {
    if (strcmp(s, "cpu") == 0) { *out = graft_cpu; return GRAFT_OK; }
    if (strncmp(s, "cuda", 4) == 0) {
        int idx = 0;
        if (s[4] == ':') {
            char *end;
            long v = strtol(s + 5, &end, 10);
            if (*end || end == s + 5 || v < 0 || v > 127)
                return graft_error(GRAFT_EINVAL, "invalid device string \"%s\"", s);
            idx = (int)v;
        } else if (s[4]) {
            return graft_error(GRAFT_EINVAL, "invalid device string \"%s\"", s);
        }
        out->type = GRAFT_CUDA;
        out->index = (int8_t)idx;
        return GRAFT_OK;
    }
    return graft_error(GRAFT_EINVAL, "invalid device string \"%s\" (expected \"cpu\" or \"cuda:N\")", s);
}

const char *graft_device_str(graft_device d, char *buf) {
    if (d.type == GRAFT_CPU) snprintf(buf, 16, "cpu");
    else snprintf(buf, 16, "cuda:%d", d.index);
    return buf;
}
