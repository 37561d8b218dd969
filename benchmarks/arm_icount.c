/* A qemu-user TCG plugin (plugin API v1, QEMU 7.2 as in Debian 12): dynamic instruction counts per
 * mnemonic (with the vector arrangement of the first operand, e.g. "fmla.4s").
 *
 * The guest marks the window to count with two system calls that fail harmlessly: close(-12345) starts it,
 * close(-12346) ends it. At exit the plugin writes "<count> <mnemonic>" lines for that window (or for the
 * whole process, after a "# no marker window" line) to the file given by the plugin argument out=PATH.
 * Capstone 4 (qemu's disassembler here) does not know the Armv8.2 dot-product instructions; they are
 * recognised from their encodings (Arm ARM: SDOT/UDOT vector and by-element).
 *
 * Build: gcc -O2 -shared -fPIC -o libicount.so arm_icount.c -lpthread
 * Use:   qemu-aarch64 -cpu cortex-a76 -plugin ./libicount.so,out=counts.txt PROGRAM ...
 * Used by benchmarks/arm_cost.sh. The few plugin API declarations are written out here (QEMU's
 * qemu-plugin.h is not packaged in Debian). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb; struct qemu_plugin_insn;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*tb_trans_cb_t)(qemu_plugin_id_t, struct qemu_plugin_tb *);
typedef void (*udata_cb_t)(qemu_plugin_id_t, void *);
extern void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t, tb_trans_cb_t);
extern void qemu_plugin_register_atexit_cb(qemu_plugin_id_t, udata_cb_t, void *);
extern size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *);
extern struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *, size_t);
extern char *qemu_plugin_insn_disas(const struct qemu_plugin_insn *);
typedef void (*syscall_cb_t)(qemu_plugin_id_t, unsigned int, int64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t);
extern void qemu_plugin_register_vcpu_syscall_cb(qemu_plugin_id_t, syscall_cb_t);
extern const void *qemu_plugin_insn_data(const struct qemu_plugin_insn *);
extern void qemu_plugin_register_vcpu_insn_exec_inline(struct qemu_plugin_insn *, enum qemu_plugin_op, void *, uint64_t);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

#define MAXM 4096
static char *names[MAXM];
static uint64_t counts[MAXM];
static int nnames;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static char outpath[1024] = "icount.txt";

static uint64_t snap0[MAXM], snap1[MAXM];
static int marks;
/* guest markers: close(-12345) starts the window, close(-12346) ends it (aarch64 close = 57) */
static void on_syscall(qemu_plugin_id_t id, unsigned int v, int64_t num, uint64_t a1, uint64_t a2, uint64_t a3,
                       uint64_t a4, uint64_t a5, uint64_t a6, uint64_t a7, uint64_t a8) {
    if (num != 57) return;
    if ((int64_t)a1 == -12345) { memcpy(snap0, counts, sizeof counts); marks |= 1; }
    if ((int64_t)a1 == -12346) { memcpy(snap1, counts, sizeof counts); marks |= 2; }
}

static int slot(const char *disas, uint32_t w) {
    char m[64]; size_t i = 0;
    if (!strncmp(disas, ".byte", 5) || !strncmp(disas, ".inst", 5)) {  /* capstone 4 lacks the dot-product extension */
        const char *n = ".unknown";
        if ((w & 0xBFE0FC00u) == 0x0E809400u) n = "sdot.vec";
        else if ((w & 0xBFE0FC00u) == 0x2E809400u) n = "udot.vec";
        else if ((w & 0xBFC0F400u) == 0x0F80E000u) n = "sdot.elem";
        else if ((w & 0xBFC0F400u) == 0x2F80E000u) n = "udot.elem";
        disas = n;
    }
    while (disas[i] && disas[i] != ' ' && i < sizeof m - 1) { m[i] = disas[i]; i++; }
    m[i] = 0;
    /* vector arrangement matters (e.g. fmla v.4s vs scalar): append the first operand's suffix */
    const char *dot = strchr(disas, '.');
    const char *sp = strchr(disas, ' ');
    if (dot && sp && dot > sp && (dot - sp) < 8) {
        char a[8] = {0}; int j = 0; dot++;
        while (*dot && *dot != ',' && *dot != ' ' && *dot != '[' && j < 7) a[j++] = *dot++;
        strncat(m, ".", sizeof m - strlen(m) - 1); strncat(m, a, sizeof m - strlen(m) - 1);
    }
    for (int i = 0; i < nnames; i++) if (!strcmp(names[i], m)) return i;
    if (nnames >= MAXM) return MAXM - 1;
    names[nnames] = strdup(m);
    return nnames++;
}

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    size_t n = qemu_plugin_tb_n_insns(tb);
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        char *d = qemu_plugin_insn_disas(insn);
        uint32_t w; memcpy(&w, qemu_plugin_insn_data(insn), 4);
        int s = slot(d, w);
        free(d);
        qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64, &counts[s], 1);
    }
    pthread_mutex_unlock(&lock);
}

static void at_exit(qemu_plugin_id_t id, void *p) {
    FILE *f = fopen(outpath, "w");
    if (!f) return;
    if (marks != 3) fprintf(f, "# no marker window: whole process\n");
    for (int i = 0; i < nnames; i++) {
        uint64_t c = marks == 3 ? snap1[i] - snap0[i] : counts[i];
        if (c) fprintf(f, "%llu %s\n", (unsigned long long)c, names[i]);
    }
    fclose(f);
}

__attribute__((visibility("default")))
int qemu_plugin_install(qemu_plugin_id_t id, const void *info, int argc, char **argv) {
    for (int i = 0; i < argc; i++) if (!strncmp(argv[i], "out=", 4)) snprintf(outpath, sizeof outpath, "%s", argv[i] + 4);
    qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    return 0;
}
