; Function definitions, in or out of a class: the name is the declarator as written
; (`area`, `~Shape`, `operator==`), under any pointer or reference. Templates,
; `declaration`s, `typedef`s and `extern "C"` around a definition are widened to by the
; row's wrapper kinds. Where two patterns match one node, the earlier wins.

; `Circle::area` defined outside its class: a method of `Circle` (the scope qualifies it).
(function_definition
  declarator: [
    (function_declarator
      declarator: (qualified_identifier scope: (_) @scope name: (_) @name))
    (pointer_declarator
      declarator: (function_declarator
        declarator: (qualified_identifier scope: (_) @scope name: (_) @name)))
    (reference_declarator
      (function_declarator
        declarator: (qualified_identifier scope: (_) @scope name: (_) @name)))
  ]) @definition.method

(function_definition
  declarator: [
    (function_declarator declarator: (_) @name)
    (pointer_declarator declarator: (function_declarator declarator: (_) @name))
    (reference_declarator (function_declarator declarator: (_) @name))
    (pointer_declarator
      declarator: (pointer_declarator declarator: (function_declarator declarator: (_) @name)))
  ]) @definition.function

(class_specifier name: (_) @name body: (field_declaration_list)) @definition.class
(struct_specifier name: (_) @name body: (field_declaration_list)) @definition.struct
(union_specifier name: (_) @name body: (field_declaration_list)) @definition.union
(enum_specifier name: (_) @name body: (enumerator_list)) @definition.enum
(namespace_definition name: (_) @name body: (declaration_list)) @definition.module
(concept_definition name: (identifier) @name) @definition.type

(type_definition
  type: (struct_specifier !name body: (field_declaration_list))
  declarator: (type_identifier) @name) @definition.struct
(type_definition
  type: (enum_specifier !name body: (enumerator_list))
  declarator: (type_identifier) @name) @definition.enum
