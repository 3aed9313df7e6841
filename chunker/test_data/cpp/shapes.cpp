// shapes.cpp - a tiny scene graph of shapes.
#include <cmath>
#include <memory>
#include <string>
#include <vector>

namespace geo {

constexpr double kPi = 3.14159265358979;

/// Anything that has an area.
class Shape {
public:
    virtual ~Shape() = default;

    /// The area in square units.
    virtual double area() const = 0;

    virtual std::string name() const { return "shape"; }
};

class Circle : public Shape {
public:
    explicit Circle(double radius) : radius_(radius) {}

    double area() const override {
        return kPi * radius_ * radius_;
    }

    std::string name() const override;

private:
    double radius_;
};

std::string Circle::name() const {
    return "circle{" + std::to_string(radius_) + "}";
}

struct Point {
    double x;
    double y;

    double norm() const { return std::sqrt(x * x + y * y); }
};

enum class Color { Red, Green, Blue };

/// Sums the areas of all shapes.
template <typename It>
double total_area(It first, It last) {
    double sum = 0;
    for (; first != last; ++first) {
        sum += (*first)->area();
    }
    return sum;
}

template <typename T>
class Registry {
public:
    void add(std::unique_ptr<T> item) { items_.push_back(std::move(item)); }

    std::size_t size() const { return items_.size(); }

private:
    std::vector<std::unique_ptr<T>> items_;
};

namespace detail {
inline int clamp(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }
}  // namespace detail

}  // namespace geo

int main() {
    std::vector<std::unique_ptr<geo::Shape>> shapes;
    shapes.push_back(std::make_unique<geo::Circle>(1.0));
    auto by_area = [](const auto& a, const auto& b) { return a->area() < b->area(); };
    (void)by_area;
    return geo::total_area(shapes.begin(), shapes.end()) > 0 ? 0 : 1;
}
