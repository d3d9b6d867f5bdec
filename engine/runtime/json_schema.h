/* json_schema.h - JSON Schema -> GBNF grammar text (for grammar_parse).
 *
 * Supported: type (one or a list), object (properties in declared order,
 * required, additionalProperties), string (enum, const, minLength,
 * maxLength), number, integer, boolean, null, array (items, minItems,
 * maxItems), enum, const, anyOf, oneOf (as anyOf: a grammar cannot rule out
 * an output matching two branches), allOf of one schema, $ref into $defs /
 * definitions / any JSON pointer of the document (recursion allowed), and
 * the annotations (title, description, default, examples, $schema, $id,
 * $comment, deprecated, readOnly, writeOnly), which constrain nothing. Any
 * other keyword is refused with a message naming it and where it is: a
 * constraint is never dropped silently.
 *
 * Objects are generated with their declared properties only, in order (an
 * output without extra properties satisfies any additionalProperties);
 * optional properties may each be left out. Numbers have bounded digits and
 * whitespace is bounded, so a grammar never lets a model run on forever
 * inside a number or between tokens; strings are unbounded unless the
 * schema bounds them.
 *
 * Several schemas can share one grammar (tool calls: one per function):
 * jsg_schema returns the rule name of each; jsg_rule adds hand-written rules.
 */
#ifndef JSON_SCHEMA_H
#define JSON_SCHEMA_H

#include <jansson.h>
#include <stddef.h>

typedef struct jsg jsg_t;

jsg_t *jsg_new(void);
void jsg_free(jsg_t *g);
/* The rule matching instances of schema; doc is the document $refs resolve
 * in (the schema itself when NULL). NULL on error (jsg_error says why). The
 * name stays valid while g lives. */
const char *jsg_schema(jsg_t *g, json_t *schema, json_t *doc, const char *hint);
/* Adds `name ::= body`. 0, or -1 on out of memory. */
int jsg_rule(jsg_t *g, const char *name, const char *body);
/* A GBNF literal for raw bytes (quotes included), appended to the rule text
 * being built by the caller: returns a malloc'd string or NULL. */
char *jsg_literal(const char *s, size_t n);
/* The rule matching any JSON value / any JSON object. */
const char *jsg_any_value(jsg_t *g);
const char *jsg_any_object(jsg_t *g);
/* The whitespace rule's name. */
const char *jsg_ws(jsg_t *g);
/* The grammar text so far (malloc'd), or NULL on out of memory. */
char *jsg_text(jsg_t *g);
/* Why the last call failed; out_of_memory set when that was the cause. */
const char *jsg_error(const jsg_t *g, int *out_of_memory);

/* Convenience: the whole grammar for one schema (root ::= the schema).
 * NULL with a message in err (oom set on out of memory). */
char *json_schema_grammar(json_t *schema, char *err, size_t errlen, int *oom);
/* The grammar for any JSON object (response_format json_object). */
char *json_object_grammar(void);

#endif
