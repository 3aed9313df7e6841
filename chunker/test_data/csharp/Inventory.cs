using System;
using System.Collections.Generic;
using System.Linq;

namespace Shop.Inventory
{
    /// <summary>
    /// Tracks stock levels per product.
    /// </summary>
    [Serializable]
    public class StockLedger : IStockLedger
    {
        private readonly Dictionary<string, int> _levels = new();

        public event EventHandler<string>? OutOfStock;

        public int Count => _levels.Count;

        /// <summary>Creates an empty ledger.</summary>
        public StockLedger()
        {
        }

        /// <summary>Adds units of a product.</summary>
        [Obsolete("Use Receive instead")]
        public void Add(string sku, int units)
        {
            Receive(sku, units);
        }

        public void Receive(string sku, int units)
        {
            _levels[sku] = _levels.TryGetValue(sku, out var current) ? current + units : units;
        }

        public bool Take(string sku, int units)
        {
            if (!_levels.TryGetValue(sku, out var current) || current < units)
            {
                OutOfStock?.Invoke(this, $"{{sku}}: {sku}");
                return false;
            }
            _levels[sku] = current - units;
            return true;
        }

        public IEnumerable<string> LowStock(int threshold) =>
            _levels.Where(kv => kv.Value < threshold).Select(kv => kv.Key);

        public int this[string sku] => _levels.GetValueOrDefault(sku);

        private sealed class Snapshot
        {
            public DateTime TakenAt { get; } = DateTime.UtcNow;

            public override string ToString() => $"Snapshot at {TakenAt:O}";
        }
    }

    public interface IStockLedger
    {
        void Receive(string sku, int units);
        bool Take(string sku, int units);
    }

    public record struct Reservation(string Sku, int Units);

    public enum Warehouse
    {
        North,
        South,
    }

    public struct Bin
    {
        public int Row;
        public int Column;

        public override string ToString() => $"{Row}-{Column}";
    }
}
