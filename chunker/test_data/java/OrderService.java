package com.example.orders;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.ConcurrentHashMap;

/**
 * Keeps orders in memory and computes their totals.
 */
@Service
public class OrderService {
    private static final String CURRENCY = "EUR";

    private final Map<Long, Order> orders = new ConcurrentHashMap<>();

    /** Creates a service with no orders. */
    public OrderService() {
    }

    /**
     * Stores an order, replacing any order with the same id.
     *
     * @param order the order to store
     */
    @Transactional
    public void save(Order order) {
        orders.put(order.id(), order);
    }

    @Override
    public String toString() {
        return String.format("OrderService{orders=%d, currency=\"%s\"}", orders.size(), CURRENCY);
    }

    // Orders above the limit need manual review.
    public List<Order> needingReview(long limitCents) {
        List<Order> result = new ArrayList<>();
        orders.values().forEach(order -> {
            if (order.totalCents() > limitCents) {
                result.add(order);
            }
        });
        return result;
    }

    public Optional<Order> find(long id) {
        return Optional.ofNullable(orders.get(id));
    }

    /** A line of an order. */
    public record Line(String sku, int quantity, long priceCents) {
        public long totalCents() {
            return quantity * priceCents;
        }
    }

    /** An order and its lines. */
    public static final class Order {
        private final long id;
        private final List<Line> lines;

        Order(long id, List<Line> lines) {
            this.id = id;
            this.lines = List.copyOf(lines);
        }

        public long id() {
            return id;
        }

        public long totalCents() {
            return lines.stream().mapToLong(Line::totalCents).sum();
        }
    }

    enum Status {
        OPEN,
        PAID,
        SHIPPED;

        boolean isFinal() {
            return this == SHIPPED;
        }
    }

    interface Listener {
        void onSaved(Order order);
    }
}
