/*
 * ring_buffer.c - a fixed-size byte ring buffer.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RB_MIN_CAPACITY 16

/* The buffer: data[head..tail) holds the unread bytes, modulo capacity. */
struct ring_buffer {
    unsigned char *data;
    size_t capacity;
    size_t head;
    size_t len;
};

typedef enum {
    RB_OK = 0,
    RB_FULL,
    RB_EMPTY,
} rb_status;

union rb_word {
    unsigned int u;
    unsigned char bytes[4];
};

static const char *status_names[] = {"ok", "full", "empty"};

/* Allocates a buffer of at least `capacity` bytes; returns NULL on failure. */
struct ring_buffer *rb_new(size_t capacity)
{
    struct ring_buffer *rb = malloc(sizeof *rb);
    if (!rb)
        return NULL;
    if (capacity < RB_MIN_CAPACITY)
        capacity = RB_MIN_CAPACITY;
    rb->data = calloc(capacity, 1);
    rb->capacity = capacity;
    rb->head = rb->len = 0;
    return rb;
}

void rb_free(struct ring_buffer *rb)
{
    if (rb) {
        free(rb->data);
        free(rb);
    }
}

// Writes one byte; fails when the buffer is full.
rb_status rb_push(struct ring_buffer *rb, unsigned char byte)
{
    if (rb->len == rb->capacity)
        return RB_FULL;
    rb->data[(rb->head + rb->len) % rb->capacity] = byte;
    rb->len++;
    return RB_OK;
}

rb_status rb_pop(struct ring_buffer *rb, unsigned char *out)
{
    if (rb->len == 0)
        return RB_EMPTY;
    *out = rb->data[rb->head];
    rb->head = (rb->head + 1) % rb->capacity;
    rb->len--;
    return RB_OK;
}

static void print_status(rb_status status)
{
    printf("status: {%s}\n", status_names[status]);
}

int main(void)
{
    struct ring_buffer *rb = rb_new(4);
    const char *msg = "hello, {world}";
    for (size_t i = 0; i < strlen(msg); i++) {
        rb_status s = rb_push(rb, (unsigned char)msg[i]);
        if (s != RB_OK) {
            print_status(s);
            break;
        }
    }
    rb_free(rb);
    return 0;
}
