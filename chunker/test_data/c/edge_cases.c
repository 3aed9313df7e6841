enum color {
    RED,
    GREEN,
};

typedef struct {
    int x;
    int y;
} point;

typedef union {
    int i;
    float f;
} number;

static char **split_words(const char *text)
{
    return NULL;
}
