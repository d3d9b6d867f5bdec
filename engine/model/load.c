/* load.c - model_load: a model file of either kind. A .sqm is recognised
 * by its magic and loaded by sqm.c; anything else is opened as a GGUF and
 * built by model.c. Kept apart from both so that neither calls the other
 * back (sqm.c builds on model_init). */
#include "model.h"
#include "sqm.h"

#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int model_load(model_t *m, const char *path, char *err, size_t errlen) {
    memset(m, 0, sizeof *m);
    /* sniff the magic without ever blocking (a FIFO must not hang us) */
    char magic[4] = {0};
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd >= 0) {
        struct stat st;
        int is_sqm = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && read(fd, magic, 4) == 4 &&
                     memcmp(magic, "SQM1", 4) == 0;
        close(fd);
        if (is_sqm) return sqm_load_model(m, path, err, errlen);
    }
    if (gguf_open(&m->gguf, path, err, errlen) != 0) return -1;
    return model_init(m, path, err, errlen);
}

