; `class << self` is not a definition of its own: its methods belong to the enclosing class.

(module name: (_) @name) @definition.module
(class name: (_) @name) @definition.class
(method name: (_) @name) @definition.method
(singleton_method name: (_) @name) @definition.method

; `Point = Struct.new(:x, :y) do ... end` and `Error = Class.new(StandardError) { ... }`
(assignment
  left: (constant) @name
  right: (call
    receiver: (constant) @_class
    method: (identifier) @_new
    block: [(do_block) (block)])
  (#any-of? @_class "Struct" "Class" "Module" "Data")
  (#eq? @_new "new")) @definition.class
