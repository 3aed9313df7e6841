; Functions, methods, and named struct and interface types. Grouped `type ( ... )` blocks,
; `const`, `var` and `import` declarations stay glue.

(function_declaration name: (identifier) @name) @definition.function

; Methods are top level; `@scope` names them after their receiver's type (`LRU.Get`), with
; any pointer and type arguments dropped.
(method_declaration
  receiver: (parameter_list
    (parameter_declaration
      type: [
        (type_identifier) @scope
        (pointer_type (type_identifier) @scope)
        (generic_type type: (type_identifier) @scope)
        (pointer_type (generic_type type: (type_identifier) @scope))
      ]))
  name: (field_identifier) @name) @definition.method
(method_declaration name: (field_identifier) @name) @definition.method

(type_declaration
  . (type_spec name: (type_identifier) @name type: (struct_type)) .) @definition.struct
(type_declaration
  . (type_spec name: (type_identifier) @name type: (interface_type)) .) @definition.interface

; `var handler = func(w http.ResponseWriter, r *http.Request) { ... }`
(var_declaration
  . (var_spec
    name: (identifier) @name
    value: (expression_list . (func_literal) .)) .) @definition.function
