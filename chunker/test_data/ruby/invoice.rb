# frozen_string_literal: true

require "json"
require "bigdecimal"

module Billing
  TAX_RATE = BigDecimal("0.2")

  # A line on an invoice.
  LineItem = Struct.new(:description, :quantity, :unit_price) do
    def total
      quantity * unit_price
    end
  end

  # Builds and renders invoices.
  class Invoice
    include Enumerable

    attr_reader :number, :items

    # Creates an empty invoice.
    def initialize(number)
      @number = number
      @items = []
    end

    def each(&block)
      items.each(&block)
    end

    # Adds a line and returns self, so calls can be chained.
    def add(description, quantity:, unit_price:)
      items << LineItem.new(description, quantity, unit_price)
      self
    end

    def subtotal
      items.sum(BigDecimal("0"), &:total)
    end

    def total
      (subtotal * (1 + TAX_RATE)).round(2)
    end

    def to_json(*args)
      { number: number, lines: items.map { |i| { "#{i.description}" => i.total.to_s("F") } } }.to_json(*args)
    end

    def self.parse(json)
      data = JSON.parse(json)
      new(data.fetch("number"))
    end

    class << self
      def blank
        new("DRAFT")
      end
    end

    private

    def format_money(amount)
      format("%.2f", amount)
    end
  end

  module Helpers
    module_function

    def currency(amount)
      "EUR #{'%.2f' % amount}"
    end
  end
end

if $PROGRAM_NAME == __FILE__
  invoice = Billing::Invoice.new("2024-001").add("Widget", quantity: 2, unit_price: BigDecimal("9.99"))
  puts invoice.to_json
end

InvoiceError = Class.new(StandardError) {
  def message
    "invoice error"
  end
}
