extern "C" {
int c_api(void) { return 0; }
}

extern "C" int single(void) { return 1; }

namespace a::b {
struct V {
    V& operator+=(const V& o) { return *this; }
    bool operator==(const V&) const = default;
};
}

const std::string& name_ref() { static std::string s; return s; }

template <>
void a::b::V::print<int>() {}

union Value {
    int i;
    double d;
};

template <typename T>
concept Shape = requires(T t) {
    { t.area() } -> std::convertible_to<double>;
};

typedef struct {
    int x;
} Pod;

typedef enum {
    kOff,
    kOn,
} Switch;
