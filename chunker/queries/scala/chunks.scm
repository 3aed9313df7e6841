; Annotations (`@main`, `@tailrec`) are part of the definition node.

(object_definition name: (identifier) @name) @definition.class
(class_definition name: (identifier) @name) @definition.class
(trait_definition name: (identifier) @name) @definition.trait
(enum_definition name: (identifier) @name) @definition.enum
(function_definition name: (identifier) @name) @definition.function
