; `function M:f()` is a method of `M`; `function M.f()` a function in the table `M`.
(function_declaration
  name: (method_index_expression table: (_) @scope method: (identifier) @name)) @definition.method
(function_declaration
  name: (dot_index_expression table: (_) @scope field: (identifier) @name)) @definition.function
(function_declaration name: (identifier) @name) @definition.function

; `M.f = function () ... end`, `local f = function () ... end`
(assignment_statement
  (variable_list . name: (dot_index_expression table: (_) @scope field: (identifier) @name))
  (expression_list . value: (function_definition))) @definition.function
(assignment_statement
  (variable_list . name: (_) @name)
  (expression_list . value: (function_definition))) @definition.function

; `{ f = function () ... end }`
(field name: (identifier) @name value: (function_definition)) @definition.function
