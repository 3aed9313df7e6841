; Decorated definitions are widened to their `decorated_definition` (see the language row).

(function_definition name: (identifier) @name) @definition.function
(class_definition name: (identifier) @name) @definition.class
