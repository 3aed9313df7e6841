; Annotations are in the declaration's `modifiers`. A companion object is not a container of
; its own: its members are called as `Outer.member`, so they are named that way.

; `interface` and `enum class` are class declarations told apart by keyword and body. When
; two patterns match one node, the first pattern wins.
(class_declaration "interface" name: (identifier) @name) @definition.interface
(class_declaration name: (identifier) @name (enum_class_body)) @definition.enum
(class_declaration "class" name: (identifier) @name) @definition.class
(object_declaration name: (identifier) @name) @definition.class
; Extension functions are named after their receiver: `fun String.toTask()` is `String.toTask`.
(function_declaration (user_type) @scope . "." . name: (identifier) @name) @definition.function
(function_declaration name: (identifier) @name) @definition.function
(secondary_constructor "constructor" @name) @definition.method
