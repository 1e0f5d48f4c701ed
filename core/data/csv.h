/* graft data: CSV files of numbers, read into a 2-D float tensor [rows, columns].
 *
 *     graft_csv_opts o = {.delimiter = ',', .header = -1, .dtype = GRAFT_F32};
 *     graft_csv_table tab;
 *     if (graft_csv_read(&tab, "iris.csv", &o)) fprintf(stderr, "%s\n", graft_last_error());
 *     ... tab.values (+1, float32 [rows, cols]), tab.names (the header's cells, or NULL) ...
 *     graft_csv_table_free(&tab);
 *
 * Cells may be quoted ("1.5", with "" for a quote inside); spaces around a cell are
 * ignored; blank lines are skipped; \n and \r\n line ends. Every cell of a data row must
 * be a number (strtod's forms, including nan and inf); a bad cell is an error naming
 * the line and the column.
 */
#ifndef GRAFT_DATA_CSV_H
#define GRAFT_DATA_CSV_H

#include "tensor/tensor.h"

typedef struct {
    char delimiter;      /* ',' when 0 */
    int header;          /* 1: the first row holds names; 0: it is data; -1: a header when
                          * any of its cells is not a number */
    graft_dtype dtype;   /* GRAFT_F32 or GRAFT_F64 */
} graft_csv_opts;

typedef struct {
    graft_tensor *values;   /* +1: [rows, ncols] of opts->dtype */
    char **names;           /* ncols header names (malloc'd), or NULL without a header */
    int64_t ncols;
} graft_csv_table;

graft_status graft_csv_read(graft_csv_table *out, const char *path, const graft_csv_opts *o);
/* Releases values and frees names; accepts a zeroed table. */
void graft_csv_table_free(graft_csv_table *t);

#endif
