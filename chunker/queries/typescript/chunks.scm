; Where two patterns match one node the earlier wins, so the scoped forms come first.

; Methods and function-valued properties of an object literal bound to a name:
; `const api = { load() {}, save: async () => {} }` gives `api.load`, `api.save`.
(variable_declarator
  name: (identifier) @scope
  value: (object (method_definition name: (property_identifier) @name) @definition.method))
(variable_declarator
  name: (identifier) @scope
  value: (object
    (pair
      key: (property_identifier) @name
      value: [(arrow_function) (function_expression) (generator_function)]) @definition.method))

; `Foo.prototype.bar = function () {}` is a method of `Foo` (or of `ns.Foo`).
(expression_statement
  (assignment_expression
    left: (member_expression
      object: (member_expression
        object: [(identifier) (member_expression)] @scope
        property: (property_identifier) @_prototype)
      property: (property_identifier) @name)
    right: [(arrow_function) (function_expression) (generator_function)])
  (#eq? @_prototype "prototype")) @definition.method

; Class fields holding a function (`onClick = () => { ... }`) are methods.
(public_field_definition name: (property_identifier) @name
  value: [(arrow_function) (function_expression) (generator_function)]) @definition.method

(function_declaration name: (identifier) @name) @definition.function
(generator_function_declaration name: (identifier) @name) @definition.function
(function_signature name: (identifier) @name) @definition.function
(class_declaration name: (type_identifier) @name) @definition.class
(abstract_class_declaration name: (type_identifier) @name) @definition.class
(interface_declaration name: (type_identifier) @name) @definition.interface
(enum_declaration name: (identifier) @name) @definition.enum
(type_alias_declaration name: (type_identifier) @name) @definition.type
(internal_module name: (_) @name) @definition.module
(method_definition name: (_) @name) @definition.method

; `const Foo = class { ... }`
(lexical_declaration
  (variable_declarator name: (identifier) @name value: (class))) @definition.class
(abstract_method_signature name: (_) @name) @definition.method

(lexical_declaration
  (variable_declarator
    name: (identifier) @name
    value: [(arrow_function) (function_expression) (generator_function)])) @definition.function
(variable_declaration
  (variable_declarator
    name: (identifier) @name
    value: [(arrow_function) (function_expression) (generator_function)])) @definition.function

; `exports.f = function () {}`, `module.exports.f = () => {}`
(expression_statement
  (assignment_expression
    left: (member_expression property: (property_identifier) @name)
    right: [(arrow_function) (function_expression)])) @definition.function
