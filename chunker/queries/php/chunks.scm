; Attributes (`#[Route(...)]`) are an `attribute_list` inside the declaration. Only braced
; `namespace X { ... }` blocks are containers; `namespace X;` is a statement (glue).

(namespace_definition name: (namespace_name) @name body: (compound_statement)) @definition.module
(class_declaration name: (name) @name) @definition.class
(interface_declaration name: (name) @name) @definition.interface
(trait_declaration name: (name) @name) @definition.trait
(enum_declaration name: (name) @name) @definition.enum
(function_definition name: (name) @name) @definition.function
(method_declaration name: (name) @name) @definition.method
