; Attributes (`[Serializable]`) are `attribute_list` children of the declaration itself.

(namespace_declaration name: (_) @name) @definition.module
(class_declaration name: (identifier) @name) @definition.class
; `record struct` before `record`: where two patterns match one node, the earlier wins.
(record_declaration "struct" name: (identifier) @name) @definition.struct
(record_declaration name: (identifier) @name) @definition.class
(struct_declaration name: (identifier) @name) @definition.struct
(interface_declaration name: (identifier) @name) @definition.interface
(enum_declaration name: (identifier) @name) @definition.enum
(method_declaration name: (identifier) @name) @definition.method
(constructor_declaration name: (identifier) @name) @definition.method
(destructor_declaration name: (identifier) @name) @definition.method
(operator_declaration operator: _ @name) @definition.method

; Properties and indexers whose accessors have bodies are code, like methods.
(property_declaration
  name: (identifier) @name
  accessors: (accessor_list (accessor_declaration body: (block)))) @definition.method
(indexer_declaration
  "this" @name
  accessors: (accessor_list (accessor_declaration body: (block)))) @definition.method
