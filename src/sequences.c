/*-------------------------------------------------------------------------
 *
 * sequences.c
 *	  Sequence patterns (sequence_match, sequence_count,
 *	  sequence_match_events) and sequence_next_node, after ClickHouse's
 *	  sequenceMatch, sequenceCount and sequenceNextNode.
 *
 * A pattern is a list of steps, each one event: (?N) an event satisfying
 * condition N, . any event; .* lets any events come before the next step, and
 * (?t op S) does too while requiring the time from the previous step's event
 * to the next step's event to be op S seconds.  The events of a sequence are
 * those that satisfy a condition, in behavior order.  As in ClickHouse, a
 * match starts at the first event (the pattern is anchored; start it with .*
 * to find it anywhere), and sequence_count counts matches one after the
 * other, each starting right after the previous one's last event.  Where
 * steps can be placed in more than one way, the earliest placement of each
 * step in turn wins.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"

#include "sessionize.h"

typedef enum TimeOp
{
	TIME_LT,
	TIME_LE,
	TIME_GT,
	TIME_GE,
	TIME_EQ,
	TIME_NE
} TimeOp;

typedef struct TimeConstraint
{
	TimeOp		op;
	int64		usecs;
} TimeConstraint;

typedef struct SequenceStep
{
	int			condition;		/* 0-based; -1: any event */
	bool		skip_before;	/* other events may come before it */
	int			first_constraint;	/* its time constraints, in constraints[] */
	int			nconstraints;
} SequenceStep;

typedef struct SequencePattern
{
	int			nsteps;
	SequenceStep *steps;
	int			nconstraints;
	TimeConstraint *constraints;
} SequencePattern;

/* longest time a pattern can name: beyond any timestamp range */
#define MAX_PATTERN_SECONDS INT64CONST(1000000000000)

static void
malformed(const char *pattern, const char *at, const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid sequence pattern \"%s\"", pattern),
			 errdetail("%s at position %d.", detail, (int) (at - pattern) + 1),
			 errhint("A pattern is made of (?N) for an event satisfying condition N, . for any event, .* for any events, and (?t op S) with op one of >=, >, <=, <, ==, != and S seconds since the previous step.")));
}

static const char *
skip_spaces(const char *p)
{
	while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
		p++;
	return p;
}

/* An unsigned decimal number, at most max. */
static const char *
read_number(const char *pattern, const char *p, int64 max, int64 *value)
{
	const char *start = p;

	*value = 0;
	while (*p >= '0' && *p <= '9')
	{
		*value = *value * 10 + (*p - '0');
		if (*value > max)
			malformed(pattern, start, "The number is too large");
		p++;
	}
	if (p == start)
		malformed(pattern, start, "A number is expected");
	return p;
}

/* Parses a pattern over nconditions conditions; errors say where it is wrong. */
SequencePattern *
sequence_parse_pattern(const char *pattern, int nconditions, MemoryContext context)
{
	MemoryContext old = MemoryContextSwitchTo(context);
	int			length = strlen(pattern);
	SequencePattern *parsed = palloc0(sizeof(SequencePattern));
	const char *p = pattern;
	bool		skip = false;
	int			pending = 0;	/* constraints waiting for their step */

	/* every step or constraint takes at least one character */
	parsed->steps = palloc((length + 1) * sizeof(SequenceStep));
	parsed->constraints = palloc((length + 1) * sizeof(TimeConstraint));
	for (;;)
	{
		SequenceStep *step;

		p = skip_spaces(p);
		if (*p == '\0')
			break;
		if (p[0] == '.' && p[1] == '*')
		{
			skip = true;
			p += 2;
			continue;
		}
		if (p[0] == '(' && p[1] == '?')
		{
			const char *at = p;

			p = skip_spaces(p + 2);
			if (*p == 't')
			{
				TimeConstraint *constraint;
				int64		seconds;

				if (parsed->nsteps == 0)
					malformed(pattern, at, "A time condition must follow an event");
				p = skip_spaces(p + 1);
				constraint = &parsed->constraints[parsed->nconstraints];
				if (strncmp(p, ">=", 2) == 0)
					constraint->op = TIME_GE, p += 2;
				else if (strncmp(p, "<=", 2) == 0)
					constraint->op = TIME_LE, p += 2;
				else if (strncmp(p, "==", 2) == 0)
					constraint->op = TIME_EQ, p += 2;
				else if (strncmp(p, "!=", 2) == 0)
					constraint->op = TIME_NE, p += 2;
				else if (*p == '>')
					constraint->op = TIME_GT, p += 1;
				else if (*p == '<')
					constraint->op = TIME_LT, p += 1;
				else
					malformed(pattern, p, "A comparison (>=, >, <=, <, ==, !=) is expected");
				p = read_number(pattern, skip_spaces(p), MAX_PATTERN_SECONDS, &seconds);
				constraint->usecs = seconds * USECS_PER_SEC;
				parsed->nconstraints++;
				pending++;
				skip = true;
			}
			else
			{
				int64		condition;

				p = read_number(pattern, p, BEHAVIOR_MAX_STEPS + 1, &condition);
				if (condition < 1 || condition > nconditions)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("invalid sequence pattern \"%s\"", pattern),
							 errdetail("Condition %d is named at position %d, but there are %d conditions.",
									   (int) condition, (int) (at - pattern) + 1, nconditions),
							 errhint("Conditions are numbered from 1.")));
				step = &parsed->steps[parsed->nsteps++];
				step->condition = (int) condition - 1;
				step->skip_before = skip;
				step->first_constraint = parsed->nconstraints - pending;
				step->nconstraints = pending;
				skip = false;
				pending = 0;
			}
			p = skip_spaces(p);
			if (*p != ')')
				malformed(pattern, p, "A closing parenthesis is expected");
			p++;
			continue;
		}
		if (*p == '.')
		{
			step = &parsed->steps[parsed->nsteps++];
			step->condition = -1;
			step->skip_before = skip;
			step->first_constraint = parsed->nconstraints - pending;
			step->nconstraints = pending;
			skip = false;
			pending = 0;
			p++;
			continue;
		}
		malformed(pattern, p, "An unexpected character is found");
	}
	if (pending > 0)
		malformed(pattern, p, "A time condition must come before an event");
	if (parsed->nsteps == 0)
		malformed(pattern, p, "The pattern names no event");
	MemoryContextSwitchTo(old);
	return parsed;
}

/* How many steps of the pattern are (?N) events: their times are reported. */
int
sequence_pattern_events(const SequencePattern *pattern)
{
	int			n = 0;

	for (int i = 0; i < pattern->nsteps; i++)
		n += (pattern->steps[i].condition >= 0);
	return n;
}

/* The search for one match, with what it learned about failures. */
typedef struct Matcher
{
	const SequencePattern *pattern;
	const BehaviorEvent *events;
	int			count;
	uint8	   *failed;			/* bit (step, event): placing step there fails */
	int		   *fail_from;		/* per step: from here on the step cannot match */
	int		   *placed;			/* event of each step in the match found */
} Matcher;

static bool
constraints_hold(const Matcher *m, const SequenceStep *step, int64 elapsed)
{
	for (int c = 0; c < step->nconstraints; c++)
	{
		const TimeConstraint *constraint = &m->pattern->constraints[step->first_constraint + c];
		bool		holds = false;

		switch (constraint->op)
		{
			case TIME_LT:
				holds = elapsed < constraint->usecs;
				break;
			case TIME_LE:
				holds = elapsed <= constraint->usecs;
				break;
			case TIME_GT:
				holds = elapsed > constraint->usecs;
				break;
			case TIME_GE:
				holds = elapsed >= constraint->usecs;
				break;
			case TIME_EQ:
				holds = elapsed == constraint->usecs;
				break;
			case TIME_NE:
				holds = elapsed != constraint->usecs;
				break;
		}
		if (!holds)
			return false;
	}
	return true;
}

/*
 * Places step i and the ones after it, step i at from or (if it may skip)
 * later; returns the event of the last step, or -1.  Placing step i at an
 * event and failing afterwards depends on nothing else, so it is remembered;
 * so is the first position from which a step that may skip, without time
 * constraints, cannot be placed at all.
 */
static int
match_from(Matcher *m, int i, int from)
{
	const SequenceStep *step = &m->pattern->steps[i];
	int			last = step->skip_before ? m->count - 1 : from;

	check_stack_depth();
	CHECK_FOR_INTERRUPTS();
	if (from >= m->fail_from[i])
		return -1;
	for (int q = from; q <= last && q < m->count; q++)
	{
		size_t		bit = (size_t) i * m->count + q;
		int			end;

		if (m->failed[bit / 8] & (1 << (bit % 8)))
			continue;
		if (step->condition >= 0 && (m->events[q].steps & ((uint32) 1 << step->condition)) == 0)
			continue;
		if (i > 0 && !constraints_hold(m, step, m->events[q].ts - m->events[m->placed[i - 1]].ts))
			continue;
		m->placed[i] = q;
		if (i + 1 == m->pattern->nsteps)
			return q;
		end = match_from(m, i + 1, q + 1);
		if (end >= 0)
			return end;
		m->failed[bit / 8] |= (1 << (bit % 8));
	}
	if (step->skip_before && step->nconstraints == 0)
		m->fail_from[i] = Min(m->fail_from[i], from);
	return -1;
}

/*
 * Counts the matches of the state's pattern in its events (sorted here),
 * one after the other; with first_only, stops at the first.  If times is
 * not NULL it receives the times of the (?N) steps of the first match.
 */
int64
sequence_count_matches(BehaviorState *state, bool first_only, TimestampTz *times, int *ntimes)
{
	Matcher		m;
	int64		matches = 0;
	int			from = 0;
	size_t		bits;

	if (ntimes != NULL)
		*ntimes = 0;
	if (state->count == 0 || state->parsed == NULL)
		return 0;
	behavior_state_sort(state);
	m.pattern = state->parsed;
	m.events = state->events;
	m.count = state->count;
	bits = (size_t) m.pattern->nsteps * m.count;
	m.failed = palloc_extended(bits / 8 + 1, MCXT_ALLOC_HUGE | MCXT_ALLOC_ZERO);
	m.fail_from = palloc(m.pattern->nsteps * sizeof(int));
	for (int i = 0; i < m.pattern->nsteps; i++)
		m.fail_from[i] = PG_INT32_MAX;
	m.placed = palloc(m.pattern->nsteps * sizeof(int));
	while (from < m.count)
	{
		int			end = match_from(&m, 0, from);

		if (end < 0)
			break;
		if (matches == 0 && times != NULL)
		{
			for (int i = 0; i < m.pattern->nsteps; i++)
				if (m.pattern->steps[i].condition >= 0)
					times[(*ntimes)++] = m.events[m.placed[i]].ts;
		}
		matches++;
		if (first_only)
			break;
		from = end + 1;
	}
	pfree(m.failed);
	pfree(m.fail_from);
	pfree(m.placed);
	return matches;
}

/* sequence_next_node's direction and base, packed as BehaviorState.mode. */
uint32
next_node_parse(const char *direction, const char *base)
{
	uint32		mode;
	NextNodeBase kind;

	if (strcmp(direction, "forward") == 0)
		mode = 0;
	else if (strcmp(direction, "backward") == 0)
		mode = NEXT_NODE_BACKWARD;
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown sequence_next_node direction \"%s\"", direction),
				 errhint("The direction is forward or backward.")));
	if (strcmp(base, "head") == 0)
		kind = NEXT_NODE_HEAD;
	else if (strcmp(base, "tail") == 0)
		kind = NEXT_NODE_TAIL;
	else if (strcmp(base, "first_match") == 0)
		kind = NEXT_NODE_FIRST_MATCH;
	else if (strcmp(base, "last_match") == 0)
		kind = NEXT_NODE_LAST_MATCH;
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown sequence_next_node base \"%s\"", base),
				 errhint("The base is head, tail, first_match or last_match.")));
	if ((kind == NEXT_NODE_HEAD && mode == NEXT_NODE_BACKWARD) ||
		(kind == NEXT_NODE_TAIL && mode == 0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("sequence_next_node base %s cannot be used with direction %s", base, direction),
				 errhint("Use head with forward, tail with backward.")));
	return mode | ((uint32) kind << NEXT_NODE_BASE_SHIFT);
}

/*
 * The event whose value sequence_next_node returns, or -1: the base event
 * and the ones after (forward) or before (backward) it satisfy steps 1, 2,
 * ... in turn, and the answer is the event after (before) them.
 */
int
next_node_index(BehaviorState *state)
{
	int			n = state->count;
	int			nsteps = state->nsteps;
	bool		backward = (state->mode & NEXT_NODE_BACKWARD) != 0;
	NextNodeBase kind = (NextNodeBase) (state->mode >> NEXT_NODE_BASE_SHIFT);
	int			base = -1;
	int			i;

	if (n <= nsteps || nsteps == 0)
		return -1;
	behavior_state_sort(state);
	switch (kind)
	{
		case NEXT_NODE_HEAD:
			if (state->events[0].flags & BEHAVIOR_EVENT_BASE)
				base = 0;
			break;
		case NEXT_NODE_TAIL:
			if (state->events[n - 1].flags & BEHAVIOR_EVENT_BASE)
				base = n - 1;
			break;
		case NEXT_NODE_FIRST_MATCH:
			for (i = 0; i < n && base < 0; i++)
				if ((state->events[i].flags & BEHAVIOR_EVENT_BASE) && (state->events[i].steps & 1))
					base = i;
			break;
		case NEXT_NODE_LAST_MATCH:
			for (i = n - 1; i >= 0 && base < 0; i--)
				if ((state->events[i].flags & BEHAVIOR_EVENT_BASE) && (state->events[i].steps & 1))
					base = i;
			break;
	}
	if (base < 0)
		return -1;
	for (i = 0; i < nsteps; i++)
	{
		int			at = backward ? base - i : base + i;

		if (at < 0 || at >= n || (state->events[at].steps & ((uint32) 1 << i)) == 0)
			return -1;
	}
	i = backward ? base - nsteps : base + nsteps;
	return (i >= 0 && i < n) ? i : -1;
}
