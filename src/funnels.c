/*-------------------------------------------------------------------------
 *
 * funnels.c
 *	  window_funnel(): how deep into a funnel of steps a group's events go
 *	  within a window, with ClickHouse's windowFunnel modes.
 *
 * The events are read in behavior order, each as one (time, step) item per
 * step it satisfies, items of one time by step, then by event: so an event
 * that satisfies steps 1 and 2 can be both unless strict_once says otherwise,
 * and events of one time count as happening in the order of their steps.
 * Each level keeps the chain reaching it that started latest, which is the
 * one that can go furthest within the window; with strict_once also the best
 * chain ending at another event, so that an event is never used twice.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/int.h"
#include "utils/builtins.h"

#include "sessionize.h"

/* A chain reaching a level: where it started, its last event, its times. */
typedef struct FunnelChain
{
	bool		has;
	TimestampTz first;
	int			last_event;
	TimestampTz path[BEHAVIOR_MAX_STEPS];
} FunnelChain;

/* The chains kept for one level: the best, and the best ending elsewhere. */
typedef struct FunnelLevel
{
	FunnelChain best;
	FunnelChain other;
} FunnelLevel;

static const struct
{
	const char *name;
	uint32		flag;
}			funnel_modes[] =
{
	{"strict_order", FUNNEL_STRICT_ORDER},
	{"strict_deduplication", FUNNEL_STRICT_DEDUPLICATION},
	{"strict_increase", FUNNEL_STRICT_INCREASE},
	{"strict_once", FUNNEL_STRICT_ONCE},
	{"allow_reentry", FUNNEL_ALLOW_REENTRY},
};

/* A comma-separated list of modes, as flags; '' is the default mode. */
uint32
funnel_parse_mode(const char *mode)
{
	uint32		flags = 0;
	const char *p = mode;

	while (*p != '\0')
	{
		const char *start;
		int			length;
		bool		found = false;

		while (*p == ' ' || *p == '\t' || *p == '\n' || *p == ',')
			p++;
		if (*p == '\0')
			break;
		start = p;
		while (*p != '\0' && *p != ',' && *p != ' ' && *p != '\t' && *p != '\n')
			p++;
		length = p - start;
		for (int i = 0; i < lengthof(funnel_modes); i++)
		{
			if (strlen(funnel_modes[i].name) == length &&
				strncmp(funnel_modes[i].name, start, length) == 0)
			{
				flags |= funnel_modes[i].flag;
				found = true;
			}
		}
		if (!found)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unknown window_funnel mode \"%.*s\"", length, start),
					 (length == 6 && strncmp(start, "strict", 6) == 0) ?
					 errhint("The mode strict is called strict_deduplication.") :
					 errhint("The modes are strict_order, strict_deduplication, strict_increase, strict_once and allow_reentry, separated by commas.")));
	}
	if ((flags & FUNNEL_ALLOW_REENTRY) && !(flags & FUNNEL_STRICT_ORDER))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("window_funnel mode allow_reentry requires strict_order"),
				 errhint("Add strict_order to the mode, e.g. 'strict_order, allow_reentry'.")));
	return flags;
}

/* The window in microseconds: positive, and without months. */
int64
funnel_window_value(const Interval *window)
{
	int64		usecs;

	if (window->month != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("window must not contain months or years"),
				 errdetail("A month has no fixed length, so a window of months is ambiguous."),
				 errhint("Use days, hours, minutes or seconds instead.")));
	if (pg_mul_s64_overflow((int64) window->day, USECS_PER_DAY, &usecs) ||
		pg_add_s64_overflow(usecs, window->time, &usecs))
		ereport(ERROR,
				(errcode(ERRCODE_INTERVAL_FIELD_OVERFLOW),
				 errmsg("window is out of range")));
	if (usecs < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("window must not be negative"),
				 errhint("A window of 0 counts only steps at the time of the first.")));
	return usecs;
}

/* Offers a chain to a level, which keeps the latest start (newest on ties). */
static void
offer(FunnelLevel *level, const FunnelChain *chain, int depth, bool keep_paths)
{
	FunnelChain *slot = NULL;

	if (!level->best.has || chain->first >= level->best.first)
	{
		if (level->best.has && level->best.last_event != chain->last_event)
			level->other = level->best;
		slot = &level->best;
	}
	else if (chain->last_event != level->best.last_event &&
			 (!level->other.has || chain->first >= level->other.first))
		slot = &level->other;
	if (slot == NULL)
		return;
	slot->has = true;
	slot->first = chain->first;
	slot->last_event = chain->last_event;
	if (keep_paths)
		memcpy(slot->path, chain->path, (depth + 1) * sizeof(TimestampTz));
}

static int
deepest(const FunnelLevel *levels, int nsteps)
{
	int			depth = 0;

	while (depth < nsteps && levels[depth].best.has)
		depth++;
	return depth;
}

/*
 * The level window_funnel reports for the state's events (sorted here), and
 * if chain is not NULL the times of the chain that reached it.
 */
int
funnel_level(BehaviorState *state, TimestampTz *chain)
{
	int			nsteps = state->nsteps;
	uint32		mode = state->mode;
	bool		keep_paths = (chain != NULL);
	bool		once = (mode & FUNNEL_STRICT_ONCE) != 0;
	bool		increase = (mode & FUNNEL_STRICT_INCREASE) != 0;
	bool		strict_order = (mode & FUNNEL_STRICT_ORDER) != 0;
	bool		started = false;
	FunnelLevel *levels;
	FunnelLevel *before = NULL;
	int			result = -1;
	int			group;

	if (state->count == 0 || nsteps == 0)
		return 0;
	behavior_state_sort(state);
	levels = palloc0(nsteps * sizeof(FunnelLevel));
	if (increase)
		before = palloc0(nsteps * sizeof(FunnelLevel));

	for (group = 0; group < state->count && result < 0;)
	{
		int			end = group;
		uint32		steps = 0;
		bool		any_unmatched = false;

		while (end < state->count && state->events[end].ts == state->events[group].ts)
		{
			steps |= state->events[end].steps;
			any_unmatched |= (state->events[end].steps == 0);
			end++;
		}
		if (increase)
			memcpy(before, levels, nsteps * sizeof(FunnelLevel));

		/* the items of this time: step 0 (no step held) first, then by step */
		if (strict_order && any_unmatched && started)
			result = deepest(levels, nsteps);
		for (int s = 0; s < nsteps && result < 0; s++)
		{
			if ((steps & ((uint32) 1 << s)) == 0)
				continue;
			for (int e = group; e < end && result < 0; e++)
			{
				TimestampTz ts = state->events[e].ts;
				const FunnelChain *from;
				FunnelChain next;

				if ((state->events[e].steps & ((uint32) 1 << s)) == 0)
					continue;
				if (s == 0)
				{
					next.has = true;
					next.first = ts;
					next.last_event = e;
					next.path[0] = ts;
					offer(&levels[0], &next, 0, keep_paths);
					started = true;
					continue;
				}
				if ((mode & FUNNEL_STRICT_DEDUPLICATION) && levels[s].best.has)
				{
					result = deepest(levels, nsteps);
					break;
				}
				if (strict_order && started && !levels[s - 1].best.has)
				{
					if (mode & FUNNEL_ALLOW_REENTRY)
						continue;
					result = deepest(levels, nsteps);
					break;
				}
				from = increase ? &before[s - 1].best : &levels[s - 1].best;
				if (once && from->has && from->last_event == e)
					from = &levels[s - 1].other;
				if (!from->has || ts - from->first > state->window)
					continue;
				next.has = true;
				next.first = from->first;
				next.last_event = e;
				if (keep_paths)
				{
					memcpy(next.path, from->path, s * sizeof(TimestampTz));
					next.path[s] = ts;
				}
				offer(&levels[s], &next, s, keep_paths);
				if (s + 1 == nsteps)
					result = nsteps;
			}
		}
		group = end;
	}
	if (result < 0)
		result = deepest(levels, nsteps);
	if (keep_paths && result > 0)
		memcpy(chain, levels[result - 1].best.path, result * sizeof(TimestampTz));
	pfree(levels);
	if (before != NULL)
		pfree(before);
	return result;
}
