/* svg.h - a heatmap as a standalone SVG file (for `codi sweep`): a grid of colored cells with row and
   column labels, the value printed in each cell, and a color scale. Diverging (blue - white - red,
   centered on 0) or sequential (white - red). Part of the unity build of tools/codi.c (prefix svg_). */
#ifndef CODI_SVG_H
#define CODI_SVG_H

/* XML-escaped text. */
static void svg_text(FILE *f, const char *s) {
    for (; *s; s++) {
        if (*s == '<') fputs("&lt;", f);
        else if (*s == '>') fputs("&gt;", f);
        else if (*s == '&') fputs("&amp;", f);
        else if (*s == '"') fputs("&quot;", f);
        else fputc(*s, f);
    }
}

/* The color of v in [lo, hi]: diverging blue (lo) - white (0) - red (hi), or white (lo) - red (hi). */
static void svg_color(double v, double lo, double hi, int diverging, char *out, size_t cap) {
    double t;
    int r, g, b;
    if (!(v == v)) { snprintf(out, cap, "#cccccc"); return; }
    if (diverging) {
        double m = fabs(lo) > fabs(hi) ? fabs(lo) : fabs(hi);
        t = m > 0 ? v / m : 0;
        if (t > 1) t = 1;
        if (t < -1) t = -1;
        if (t >= 0) { r = 255; g = b = (int)(255 * (1 - t)); }
        else { b = 255; r = g = (int)(255 * (1 + t)); }
    } else {
        t = hi > lo ? (v - lo) / (hi - lo) : 0;
        if (t > 1) t = 1;
        if (t < 0) t = 0;
        r = 255; g = b = (int)(255 * (1 - t));
    }
    snprintf(out, cap, "#%02x%02x%02x", r, g, b);
}

/* values [rows, cols] row-major (NaN: grey, no number); returns 0, or -1 when path cannot be written. */
static int svg_heatmap(const char *path, const char *title, const char *const *row_labels, int rows,
                       const char *const *col_labels, int cols, const double *values, int diverging, const char *value_format) {
    FILE *f = fopen(path, "w");
    int cw = 56, ch = 22, left = 90, top = 50, r, c;
    double lo = 0, hi = 0;
    char color[16], num[32];
    if (!f) return -1;
    for (r = 0; r < rows * cols; r++) if (values[r] == values[r]) { if (values[r] < lo) lo = values[r]; if (values[r] > hi) hi = values[r]; }
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" font-size=\"11\">\n",
            left + cols * cw + 20, top + rows * ch + 40);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n<text x=\"%d\" y=\"20\" font-size=\"14\">", left);
    svg_text(f, title);
    fprintf(f, "</text>\n");
    for (c = 0; c < cols; c++) {
        fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">", left + c * cw + cw / 2, top - 6);
        svg_text(f, col_labels[c]);
        fprintf(f, "</text>\n");
    }
    for (r = 0; r < rows; r++) {
        fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">", left - 6, top + r * ch + ch / 2 + 4);
        svg_text(f, row_labels[r]);
        fprintf(f, "</text>\n");
        for (c = 0; c < cols; c++) {
            double v = values[(size_t)r * cols + c];
            svg_color(v, lo, hi, diverging, color, sizeof color);
            fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"%s\" stroke=\"#888\" stroke-width=\"0.5\"/>",
                    left + c * cw, top + r * ch, cw, ch, color);
            if (v == v) {
                snprintf(num, sizeof num, value_format, v);
                fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">%s</text>", left + c * cw + cw / 2, top + r * ch + ch / 2 + 4, num);
            }
            fputc('\n', f);
        }
    }
    snprintf(num, sizeof num, value_format, diverging ? -(fabs(lo) > fabs(hi) ? fabs(lo) : fabs(hi)) : lo);
    fprintf(f, "<text x=\"%d\" y=\"%d\">scale: %s", left, top + rows * ch + 24, num);
    snprintf(num, sizeof num, value_format, diverging ? (fabs(lo) > fabs(hi) ? fabs(lo) : fabs(hi)) : hi);
    fprintf(f, " (%s) to %s (red)</text>\n</svg>\n", diverging ? "blue; 0 white" : "white", num);
    return fclose(f) == 0 ? 0 : -1;
}

#endif
